"""Coverage of the Delta intervals on the synthetic model: the old normal / bootstrap intervals
against the new ones (fixed K and adaptive K), for zero-inflated cells.

Not a unit test: prints a Markdown table (paste it into bench/RESULTS.md). How it works:

1. Pool. `rescore_boundaries` (the engine's own code) moves POOL fresh latents along two true
   factor directions of the synthetic model (32 px) at all layers and at each layer, and scores
   every semantic: per-latent gains of every cell. Regenerating images for each of 600 reps per
   setting would take hours on 2 cores, so reps are *simulated* by drawing gains from this pool
   (the population is the pool's empirical distribution, so the true Delta is its mean).
2. Cells. The main-effect cell (move lighting at all layers, score lighting: an ordinary cell);
   zero-inflated populations with zero share z = 0.88 and 0.99: with probability z a gain is 0,
   else a draw from the main cell's nonzero gains, true Delta (1 - z) * mean(nonzero); and the
   pool's own cells (bounded semantics) whose zero shares come nearest 0.88 and 0.99.
3. Intervals per rep, at K = 30, 100, 300, 1000: old normal (Delta -+ 1.96 SE, unclipped), old
   percentile bootstrap (1000 resamples), new `auto` interval (betting lower bound, empirical-
   Bernstein upper bound). Adaptive K: new = stop at the first latent where the confidence
   sequence's half-width <= target and report it; old = check the normal half-width after each
   chunk of 50 latents (SE = 0 counted as met) and report the normal interval.

    python bench/bench_coverage.py            # about 5-10 minutes on 2 cores
    python bench/bench_coverage.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from rescore.engine.boundary import Boundary
from rescore.engine.intervals import Z_95, ConfidenceSequence, bernstein_interval
from rescore.engine.rescore import RescoreConfig, rescore_boundaries
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.engine.stats import bootstrap_ci, iter_chunk_gains
from rescore.export.backends import BackendSpec
from rescore.export.threads import apply_thread_budget
from rescore.models.registry import GeneratorOptions, ModelRef
from rescore.models.synthetic import build_synthetic

SPEC = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=32))
FACTOR = "lighting"  # a bounded semantic with a strong main effect
KS = (30, 100, 300, 1000)
MAX_K = 2000  # adaptive K stops here at the latest


def gain_pool(num_latents: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Per-latent gains [N, M, K, S] of the true factor directions, semantic names, ranges [S]."""
    generator = build_synthetic(resolution=32)
    directions = generator.directions.numpy()
    boundaries = [
        Boundary(name, directions[i : i + 1].copy())
        for i, name in enumerate(generator.factor_names)
        if name == FACTOR
    ]
    config = RescoreConfig(num_latents=num_latents, seed=11, chunk_size=500, batch_size=100)
    with tempfile.TemporaryDirectory() as tmp:
        with open_model_session(SPEC, BackendSpec("torch", "cpu")) as session:
            run = rescore_boundaries(session, SPEC, boundaries, Path(tmp) / "p.zarr", config)
            declared = session.semantic_ranges
            ranges = np.array([np.nan if r is None else r[1] - r[0] for r in declared])
        pool = np.concatenate([g for _, g, _ in iter_chunk_gains(run.store)])
        names = list(run.store.meta["semantic_names"])
    return pool.astype(np.float64), names, ranges


def draw(rng, population: np.ndarray, zeros: float, reps: int, k: int) -> np.ndarray:
    """reps x k gains: 0 with probability `zeros`, else a draw from `population`."""
    values = rng.choice(population, size=(reps, k))
    return np.where(rng.random((reps, k)) < zeros, 0.0, values)


def old_normal(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    se = x.std(axis=1, ddof=1) / np.sqrt(x.shape[1])
    return x.mean(axis=1) - Z_95 * se, x.mean(axis=1) + Z_95 * se


def old_bootstrap(x: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    bounds = [bootstrap_ci(row[:, None], 1000, rng) for row in x]
    return np.array([b[0][0] for b in bounds]), np.array([b[1][0] for b in bounds])


def new_fixed(prefix, x: np.ndarray, k: int, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The `auto` interval at K = k: betting lower bound (from the sequence), Bernstein upper."""
    sample = x[:, :k]
    _, high = bernstein_interval(sample.mean(1), sample.var(1, ddof=1), k, width)
    return prefix.low[k - 1, :, 0], high


def sequence_prefix(x: np.ndarray, width: float, horizon: int):
    """The confidence sequence of every rep (reps side by side), after each latent."""
    sequence = ConfidenceSequence(x.shape[0], np.array([width]), horizon)
    return sequence.extend(x.T[:, :, None])  # [n, reps, 1]


def coverage(low, high, truth) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def natural_cells(gains: np.ndarray, names: list[str], ranges: np.ndarray) -> list[tuple]:
    """The pool's cells [N, K, S] of bounded semantics whose zero share is nearest 0.88 / 0.99
    (excluding pure-rounding cells), as (label, population, 0, truth)."""
    zero_share = (gains == 0).mean(axis=0)  # [K, S]
    real = np.isfinite(ranges)[None, :] & (gains.mean(axis=0) > 1e-4 * np.nan_to_num(ranges))
    found = []
    for target in (0.88, 0.99):
        distance = np.where(real, np.abs(zero_share - target), np.inf)
        k, s = np.unravel_index(np.argmin(distance), distance.shape)
        if distance[k, s] <= 0.05:
            label = f"pool cell {names[s]}, set {k} ({zero_share[k, s]:.1%} zeros)"
            found.append((label, gains[:, k, s], 0.0, float(gains[:, k, s].mean())))
    return found


def cell_width(label: str, width: float, ranges: np.ndarray, names: list[str]) -> float:
    """R of the semantic a cell scores (the main semantic unless the label names another)."""
    for index, name in enumerate(names):
        if label.startswith(f"pool cell {name},"):
            return float(ranges[index])
    return width


def fixed_rows(name, x, prefix, truth, width, rng) -> list[str]:
    rows = []
    for k in KS:
        sample = x[:, :k]
        normal = old_normal(sample)
        boot = old_bootstrap(sample, rng)
        new = new_fixed(prefix, x, k, width)
        zero_width = float(np.mean(normal[1] - normal[0] == 0))
        below = float(np.mean(normal[0] < 0))
        rows.append(
            f"| {name} | {k} | {coverage(*normal, truth):.3f} | {coverage(*boot, truth):.3f} | "
            f"{coverage(*new, truth):.3f} | {zero_width:.2f} | {below:.2f} | "
            f"{np.mean(new[1] - new[0]):.4f} |"
        )
    return rows


def adaptive_row(name, x, prefix, truth, target) -> str:
    n = x.shape[1]
    half = (prefix.high[:, :, 0] - prefix.low[:, :, 0]) / 2.0  # [n, reps]
    met = (half <= target) & (prefix.high[:, :, 0] > prefix.low[:, :, 0])
    met[0] = False  # as the engine: never on one latent
    stop = np.where(met.any(axis=0), met.argmax(axis=0), n - 1)  # index of the stop latent
    reps = np.arange(x.shape[0])
    low, high = prefix.low[stop, reps, 0], prefix.high[stop, reps, 0]
    # old rule: normal half-width after each chunk of 50, SE = 0 counted as met
    old_low, old_high, old_k = [], [], []
    for r in range(x.shape[0]):
        for k in range(50, n + 1, 50):
            a, b = old_normal(x[r : r + 1, :k])
            if (b - a)[0] / 2 <= target or k == n:
                old_low.append(a[0])
                old_high.append(b[0])
                old_k.append(k)
                break
    old_zero = float(np.mean(np.array(old_high) == 0))
    return (
        f"| {name} | {target:.4g} | {coverage(low, high, truth):.3f} | "
        f"{int(np.median(stop + 1))} | {coverage(np.array(old_low), np.array(old_high), truth):.3f}"
        f" | {int(np.median(old_k))} | {old_zero:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=1000, help="latents in the gain pool")
    parser.add_argument("--reps", type=int, default=600, help="simulated runs per setting")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.pool, args.reps = 200, 60
    apply_thread_budget()
    started = time.time()
    pool, names, ranges = gain_pool(args.pool)
    rng = np.random.default_rng(0)
    semantic = names.index(FACTOR)
    width = float(ranges[semantic])
    cell = pool[:, 0, 0, semantic]  # move lighting at all layers, score lighting
    nonzero = cell[cell > 0]
    print(
        f"# coverage bench, {datetime.date.today()}, {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} CPUs; pool {args.pool} latents ({time.time() - started:.0f} s), "
        f"{args.reps} reps per setting; {FACTOR} range width R = {width:.4g}\n"
    )
    cells = [
        ("main effect (lighting, all layers)", cell, 0.0, float(cell.mean())),
        ("88% zeros", nonzero, 0.88, 0.12 * float(nonzero.mean())),
        ("99% zeros", nonzero, 0.99, 0.01 * float(nonzero.mean())),
    ]
    cells += natural_cells(pool[:, 0], names, ranges)
    fixed, adaptive = [], []
    for name, population, zeros, truth in cells:
        x = draw(rng, population, zeros, args.reps, MAX_K)
        cell_range = cell_width(name, width, ranges, names)
        prefix = sequence_prefix(x, cell_range, MAX_K)
        fixed += fixed_rows(name, x, prefix, truth, cell_range, rng)
        adaptive += [adaptive_row(name, x, prefix, truth, t) for t in (truth, truth / 2)]
    print(
        "| cell | K | old normal | old bootstrap | new (auto) | old zero-width | "
        "old ci_low<0 | new mean width |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    print("\n".join(fixed))
    print(
        "\n| cell | target half-width | new coverage at stop | new median K | old coverage at "
        "stop | old median K | old [0, 0] share |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    print("\n".join(adaptive))
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
