"""Images needed for a 95%-confident peak set: fixed K vs successive elimination (`--eliminate`).

For each model, one fixed-K rescore run (the engine, K_max latents, every layer set) gives the
reference peak set of each boundary's own semantic: the simultaneous 95% MCB set at K_max
(`peaks`). Then, on the same per-latent gains (scores do not depend on which other layer sets
are scored: the micro-batch grid), both rules are followed latent by latent:

    fixed K      the first K whose MCB peak set equals the reference set (an oracle K: the most
                 favourable fixed K there is); images = K * (1 + layer sets)
    elimination  `elimination.Eliminator` exactly as `rescore --eliminate` applies it (tie 0): the
                 first latent T where the layers never eliminated equal the reference set;
                 images = T originals + every (layer set, latent) it moved up to T

and the run's own totals at K_max (what `summary.json` reports as `images`). Models: the synthetic
scene model (known layer groups; its pixel predictor's semantics are the scene factors) and
StyleGAN-256 with seeded random weights scored by the colour statistics (random weights: the
semantics are plain colour statistics of the images, e.g. brightness; the boundary is a seeded
random unit direction in W named after the statistic, so "where it lives" is a property of the
random network, not of a trained scene model). Places365 (60 GFLOP per image) is too slow for a
2-core machine at these K.

    python bench/bench_elimination.py --quick    # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rescore.engine.boundary import Boundary
from rescore.engine.elimination import EliminationSpec, Eliminator, interest_columns
from rescore.engine.fit import FitConfig
from rescore.engine.layout import RunDirectory
from rescore.engine.peaks import peak_sets, tie_tolerance
from rescore.engine.pipeline import fit_step, rescore_step, sample_step
from rescore.engine.rescore import RescoreConfig, open_rescore, rescore_boundaries
from rescore.engine.sample import SampleConfig
from rescore.engine.spec import GeneratorOptions, ModelSpec, open_model_session
from rescore.engine.stats import GainAccumulator, iter_chunk_gains, score_ranges, score_spread
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef
from rescore.models.stylegan import save_random_stylegan

CPU = BackendSpec("torch", "cpu")


def first_fixed_k(gains: np.ndarray, column: int, target: np.ndarray, tolerance, step: int):
    """The first K (multiple of `step`) whose MCB peak set of `column` equals `target` [L]."""
    accumulator = GainAccumulator(gains.shape[1], gains.shape[2])
    for stop in range(step, len(gains) + 1, step):
        accumulator.add(gains[stop - step : stop])
        _, mask = peak_sets(
            accumulator.mean[1:], accumulator.comoment[:, 1:, 1:], accumulator.count, tolerance
        )
        if np.array_equal(mask[:, column], target):
            return stop
    return None


def elimination_trace(gains, column: int, ranges, target, paired: bool):
    """Follow the elimination rule latent by latent: (first T with survivors == target or None,
    images up to T, images at K_max, survivors at K_max)."""
    num_sets, one = gains.shape[1], np.array([True])
    eliminator = Eliminator([np.array([column])], one, num_sets, ranges, len(gains), paired=paired)
    reached = images_at = None
    for t in range(len(gains)):
        if not eliminator.active[0]:
            break
        eliminator.update(0, gains[t : t + 1])
        if reached is None and np.array_equal(eliminator.survivors(0)[:, 0], target):
            reached = t + 1
            images_at = reached + int(eliminator.set_counts[0].sum())
    total = eliminator.set_counts[0].max() + int(eliminator.set_counts[0].sum())
    return reached, images_at, int(total), np.flatnonzero(eliminator.survivors(0)[:, 0])


def compare(label: str, store, step: int) -> list[tuple]:
    """One table row per boundary named after a semantic (see the module docs)."""
    meta = store.meta
    names, semantics = meta["boundary_names"], meta["semantic_names"]
    columns = interest_columns(names, semantics, EliminationSpec())
    parts = [(g, a) for _, g, a in iter_chunk_gains(store)]
    ranges = score_ranges(store)
    tolerance = tie_tolerance(ranges, score_spread(store))
    rows = []
    for m, name in enumerate(names):
        if not len(columns[m]):
            continue
        gains = np.concatenate([g[a[:, m], m] for g, a in parts])  # [K, sets, S]
        column = int(columns[m][0])
        reference = GainAccumulator(gains.shape[1], gains.shape[2])
        reference.add(gains)
        _, mask = peak_sets(
            reference.mean[1:], reference.comoment[:, 1:, 1:], reference.count, tolerance
        )
        target = mask[:, column]
        k_fixed = first_fixed_k(gains, column, target, tolerance, step)
        sets = gains.shape[1]
        images_fixed = None if k_fixed is None else k_fixed * (1 + sets)
        for paired in (False, True):
            t_elim, images_elim, total, survivors = elimination_trace(
                gains, column, ranges, target, paired
            )
            rows.append(
                (
                    label,
                    name,
                    "paired" if paired else "per-layer",
                    np.flatnonzero(target).tolist(),
                    k_fixed,
                    images_fixed,
                    t_elim,
                    images_elim,
                    len(gains) * (1 + sets),
                    total,
                    survivors.tolist(),
                )
            )
    return rows


def synthetic_store(root: Path, latents: int, factors: tuple[str, ...]):
    """A fixed-K rescore store of the synthetic model's boundaries for `factors`."""
    spec = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions())
    run = RunDirectory(root / "synthetic")
    sample_step(run, spec, CPU, SampleConfig(3000, 0, 1000, 250), progress=False)
    fit_step(run, FitConfig(chosen_num=450, space="w", semantics=factors), progress=False)
    rescore_step(run, CPU, RescoreConfig(latents, 1, 2.0, 100, 20), spec=spec, progress=False)
    return open_rescore(run.rescore_store)


def stylegan_store(root: Path, latents: int, semantics: tuple[str, ...], resolution: int):
    """A fixed-K rescore store of seeded random W directions named after colour statistics."""
    path = save_random_stylegan(root / "g.pth", resolution=resolution)
    spec = ModelSpec(ModelRef("stylegan", path), (ModelRef("color"),), GeneratorOptions())
    with open_model_session(spec, CPU) as session:
        geometry = session.geometry
        rng = np.random.default_rng(5)
        boundaries = []
        for name in semantics:
            normal = rng.standard_normal((1, geometry.w_dim)).astype(np.float32)
            boundaries.append(Boundary(name, normal / np.linalg.norm(normal), space="w"))
        config = RescoreConfig(latents, 1, 3.0, 10, 2, force_family=True)
        return rescore_boundaries(session, spec, boundaries, root / "sg.zarr", config).store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small K (a few minutes)")
    parser.add_argument("--models", nargs="+", default=["synthetic", "stylegan"])
    args = parser.parse_args()
    quick = args.quick
    factors = (
        ("horizon", "object_x", "palette_hue")
        if quick
        else (
            "horizon",
            "object_x",
            "object_presence",
            "palette_hue",
            "palette_saturation",
            "tilt",
            "clutter",
        )
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "synthetic" in args.models:
            start = time.perf_counter()
            store = synthetic_store(root, 300 if quick else 2000, factors)
            rows += compare("synthetic 64px", store, 5)
            print(f"synthetic: {time.perf_counter() - start:.0f} s", flush=True)
        if "stylegan" in args.models:
            start = time.perf_counter()
            store = stylegan_store(root, 12 if quick else 40, ("brightness",), 256)
            rows += compare("StyleGAN-256 (random) + colour", store, 2)
            print(f"stylegan: {time.perf_counter() - start:.0f} s", flush=True)
    print(
        "| model | boundary | elimination | reference peak set | fixed K needed | images "
        "| elimination T | images | fixed run images at K_max | elimination images at K_max "
        "| elim. set at K_max |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join("-" if v is None else str(v) for v in row) + " |")
    for mode in ("per-layer", "paired"):
        mine = [r for r in rows if r[2] == mode]
        reached = [r for r in mine if r[5] is not None and r[7] is not None]
        fixed, elim = sum(r[5] for r in reached), sum(r[7] for r in reached)
        print(
            f"summary ({mode}): {len(reached)}/{len(mine)} peak sets reached by both; images "
            f"oracle fixed K {fixed}, elimination {elim}; at K_max elimination used "
            f"{sum(r[9] for r in mine) / sum(r[8] for r in mine):.0%} of the fixed run"
        )


if __name__ == "__main__":
    main()
