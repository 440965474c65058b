"""Time every kernel's NumPy reference against its numba path, side by side in one run.

    python bench/bench_kernels.py            # sizes typical of large stores (< 2 min on 2 cores)
    python bench/bench_kernels.py --quick    # tiny sizes, a smoke test

The numba kernels are compiled (or loaded from numba's cache) before anything is timed; each
entry is the best of --repeat runs. The ratio is ref time / numba time (> 1: numba is faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from rescore.kernels import (
    condition,
    layer_sets_all_and_each,
    manipulate,
    project_chunks,
    select_top_bottom,
)


@dataclass(frozen=True)
class Sizes:
    """Problem sizes for one benchmark run."""

    project_rows: int  # codes [N, D] streamed through project_chunks
    dim: int
    boundaries: int
    chunk_rows: int
    select_rows: int  # scores [N], top and bottom `select_fraction` selected
    select_fraction: float
    manip_codes: int  # manipulate [M, K, N, L, D]
    num_layers: int
    conditions: int  # condition a per-layer boundary [L, D] on this many conditions


FULL = Sizes(1_000_000, 512, 10, 65536, 10_000_000, 0.02, 64, 14, 20)
QUICK = Sizes(20_000, 512, 10, 4096, 200_000, 0.02, 8, 14, 20)


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of `repeat` wall-clock runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cases(sizes: Sizes, rng: np.random.Generator) -> list[tuple[str, Callable[[str], object]]]:
    """(label, run(impl)) for each kernel on inputs drawn once and shared by both impls."""
    codes = rng.standard_normal((sizes.project_rows, sizes.dim), dtype=np.float32)
    normals = rng.standard_normal((sizes.boundaries, sizes.dim), dtype=np.float32)
    offsets = rng.standard_normal(sizes.boundaries, dtype=np.float32)
    scores = rng.standard_normal(sizes.select_rows, dtype=np.float32)
    scores[rng.random(sizes.select_rows) < 0.001] = np.nan
    k = int(sizes.select_rows * sizes.select_fraction)
    wp = rng.standard_normal((sizes.manip_codes, sizes.num_layers, sizes.dim), dtype=np.float32)
    directions = rng.standard_normal(
        (sizes.boundaries, sizes.num_layers, sizes.dim), dtype=np.float32
    )
    layer_sets = layer_sets_all_and_each(sizes.num_layers)
    # [M, K, N, L, D], allocated once so the timing is the kernel's, not the page faults'
    out = np.empty((sizes.boundaries, len(layer_sets), *wp.shape), np.float32)
    primal = rng.standard_normal((sizes.num_layers, sizes.dim))
    conds = rng.standard_normal((sizes.conditions, sizes.num_layers, sizes.dim))

    def run_condition(impl: str) -> None:
        for _ in range(20):
            condition(primal, conds, impl=impl)

    m, s, n, la, d = out.shape
    return [
        (
            f"project_chunks [{sizes.project_rows}, {sizes.dim}] x {sizes.boundaries} "
            f"(chunks of {sizes.chunk_rows})",
            lambda impl: project_chunks(
                codes, normals, offsets, chunk_rows=sizes.chunk_rows, impl=impl
            ),
        ),
        (
            f"select_top_bottom k={k} of {sizes.select_rows} (chunks of {sizes.chunk_rows})",
            lambda impl: select_top_bottom(scores, k, chunk_rows=sizes.chunk_rows, impl=impl),
        ),
        (
            f"manipulate -> [{m}, {s}, {n}, {la}, {d}]",
            lambda impl: manipulate(wp, directions, layer_sets, 2.0, impl=impl, out=out),
        ),
        (
            f"condition [{sizes.num_layers}, {sizes.dim}] on {sizes.conditions} (x20)",
            run_condition,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per entry (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"{os.cpu_count()} cpus, {numba.get_num_threads()} numba threads"
    )
    setup = time.perf_counter()
    warm = cases(QUICK, np.random.default_rng(args.seed))  # compile / load the numba cache
    for _, run in warm:
        run("numba")
    del warm
    benches = cases(sizes, np.random.default_rng(args.seed))
    print(f"setup and numba warm-up: {time.perf_counter() - setup:.1f} s\n")

    print(f"| {'kernel':<62} | {'ref s':>8} | {'numba s':>8} | {'ref/numba':>9} |")
    print(f"|{'-' * 64}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for label, run in benches:
        ref = best_time(lambda run=run: run("ref"), args.repeat)
        fast = best_time(lambda run=run: run("numba"), args.repeat)
        print(f"| {label:<62} | {ref:8.3f} | {fast:8.3f} | {ref / fast:8.2f}x |")


if __name__ == "__main__":
    main()
