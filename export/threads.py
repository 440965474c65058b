"""One CPU thread budget for torch, numba and ONNX Runtime, applied once at startup.

    budget = --threads N, else OMP_NUM_THREADS when set, else the CPUs this process may use
    torch          torch.set_num_threads(budget)
    numba          NUMBA_NUM_THREADS = budget before numba is imported (the size of its pool),
                   numba.set_num_threads(budget) after
    ONNX Runtime   intra_op_num_threads = budget for every CPU session (`OrtSession` reads
                   `thread_budget()`)

Why numba is in the list: numba's OpenMP threading layer starts its pool with NUMBA_NUM_THREADS
threads on the first parallel kernel and, sharing libgomp with torch, sets the OpenMP thread count
to it: without a budget a first `prange` kernel silently raised torch from the user's
OMP_NUM_THREADS=1 to every core. `apply_thread_budget` launches that pool at the budget and sets
torch after it, so nothing changes behind the user's back.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from rescore.models.errors import RescoreError

_applied: int | None = None
_requested: int | None = None  # --threads, recorded at startup, applied when a command runs


def available_cpus() -> int:
    """CPUs this process may run on (affinity / container limits), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """OMP_NUM_THREADS when set to a positive integer, else the CPUs this process may use."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return available_cpus()


def thread_budget() -> int:
    """The budget `apply_thread_budget` set, or the default when it was never called."""
    return _applied if _applied is not None else default_threads()


def request_thread_budget(threads: int | None) -> None:
    """Record the budget asked for (`--threads`) without importing torch or numba, so that help
    and usage errors stay instant; `apply_thread_budget()` applies it before the work starts."""
    global _requested
    if threads is not None and threads < 1:
        raise RescoreError(f"--threads must be at least 1, got {threads}")
    _requested = threads


def apply_thread_budget(threads: int | None = None) -> int:
    """Set torch's and numba's thread counts (and ONNX Runtime's, through `thread_budget`) to
    one budget (`threads`, else the requested one, else the default); returns it. Call once at
    startup, before any parallel work."""
    global _applied
    threads = _requested if threads is None else threads
    budget = default_threads() if threads is None else int(threads)
    if budget < 1:
        raise RescoreError(f"--threads must be at least 1, got {threads}")
    _applied = budget
    if "numba" not in sys.modules:  # numba reads it once, at import; later it must not change
        os.environ.setdefault("NUMBA_NUM_THREADS", str(budget))
    _numba_threads(budget)
    import torch

    torch.set_num_threads(budget)  # after numba's pool started: it sets OpenMP's count
    return budget


def _numba_threads(budget: int) -> None:
    """Start numba's thread pool at the budget (when numba is installed)."""
    if importlib.util.find_spec("numba") is None:
        return
    import numba

    numba.set_num_threads(min(budget, numba.config.NUMBA_NUM_THREADS))
