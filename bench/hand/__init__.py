"""Hand-written losses of the issue-13 models (bench/speed_models.py)."""
