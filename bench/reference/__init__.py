"""Plain hand-written reference loops of each model (see common.py); used by bench/quality.py."""
