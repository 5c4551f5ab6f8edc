"""How many CPU threads torch uses for one process (``--threads`` of train, evaluate and sample).

torch's own default is one intra-op thread per core. On a small machine that also runs other work
that is the slowest choice: OpenMP workers spin-wait for a core that is busy. Measured on a shared
2-core machine (``bench/threads.py``, docs/RESULTS.md "Threads"): one thread ran the default run
and a conv-net PolyMNIST run 4-10 times faster than two. Hence the default: half the cores this
process may use, at least 1 and at most 4. Not measured: an idle 2-core machine (two threads may
then be faster for conv nets) and machines with more cores (the cap of 4 is a guess); ``--threads``
overrides the default, and ``OMP_NUM_THREADS`` in the environment is respected as given.
"""
from __future__ import annotations

import os

from .errors import UserError

MAX_DEFAULT = 4


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores: int | None = None, environ: dict | None = None) -> int:
    """OMP_NUM_THREADS when it is set to a positive number, else max(1, min(4, cores // 2))."""
    env = os.environ if environ is None else environ
    given = env.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    cores = available_cores() if cores is None else cores
    return max(1, min(MAX_DEFAULT, cores // 2))


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns the number."""
    import torch

    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    n = default_threads() if threads is None else int(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
