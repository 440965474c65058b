"""`rescore name`: give unsupervised directions the names re-scoring finds for them.

An unsupervised direction n has no sign, so it is rescored as two boundaries, +n and -n, with the
ordinary rescore pass (every semantic, all layers and each layer, on fresh latents; store
DIR/names.zarr). Then, per direction and semantic, on the same latents i:

    contrast_i = gain(+n)_i - gain(-n)_i       gain = max(0, s(moved) - s(original)), all layers
    effect     = mean_i contrast_i / spread_s  spread_s: std of the semantic (over DIR/samples.zarr
                                               if it has these semantics, else over the latents)

The sign of the mean contrast says which way n moves the semantic; the effect is *named* when its
paired 95% CI excludes zero (a direction that only adds noise moves both ways alike) and
|effect| >= `min_effect` (a practical floor: consistent but tiny effects are not names). Each
named effect reports HiGAN's Delta of the signed boundary with its CI, and the layers where it acts:
the peak layer and the layers not distinguishable from it (the paired layer test of
`engine.stats`). A direction whose strongest effect is not named is reported as unnamed.

Outputs: DIR/names.csv (`direction,sign,semantic,layers,delta,ci_low,ci_high,k`), DIR/names.json
(format `rescore.names` version 1), DIR/names.png (directions x semantics, signed effect) and a
manipulation grid per top named direction in DIR/grids/.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.export.backends import BackendSpec

from .boundary import Boundary, load_boundaries
from .errors import BoundaryError
from .grid import manipulation_grid, save_grid
from .layout import RunDirectory
from .rescore import RescoreConfig, rescore_boundaries
from .spec import ModelSpec, open_model_session
from .stats import Z_95, DeltaTable, GainAccumulator, delta_statistics, iter_chunk_gains
from .store import ChunkedStore
from .version import __version__

NAMES_FORMAT = "rescore.names"
NAMES_FORMAT_VERSION = 1
_SPREAD_SAMPLES = 10_000
NAMES_COLUMNS = ("direction", "sign", "semantic", "layers", "delta", "ci_low", "ci_high", "k")


@dataclass(frozen=True)
class NameConfig:
    """Latents, distance and naming thresholds of `rescore name`."""

    num_latents: int = 200
    distance: float = 3.0
    seed: int = 0
    chunk_size: int = 100
    batch_size: int = 32
    top: int = 3  # most named effects reported per direction
    min_effect: float = 0.2  # |mean contrast| / spread of the semantic, below: not a name
    grids: int = 3  # manipulation grids for the strongest named directions


@dataclass(frozen=True)
class Effect:
    """One (direction, semantic) effect: its sign, size, CI and layers."""

    semantic: str
    sign: str  # "+" or "-": moving along sign * n increases the semantic
    effect: float  # mean contrast / spread (signed)
    contrast: float
    contrast_ci: tuple[float, float]
    delta: float  # Delta of the signed boundary at all layers
    ci_low: float
    ci_high: float
    k: int
    peak_layer: int
    layers: tuple[int, ...]
    significant: bool


@dataclass(frozen=True, eq=False)
class Naming:
    """Named effects per direction, and the full signed-effect matrix [M, S]."""

    directions: tuple[str, ...]
    semantics: tuple[str, ...]
    effects: np.ndarray = field(repr=False)  # [M, S] signed standardized effect
    named: dict[str, list[Effect]] = field(repr=False)  # direction -> named effects, strongest 1st
    strongest: dict[str, Effect] = field(repr=False)


def signed_boundaries(directions: list[Boundary]) -> list[Boundary]:
    """Each direction n as the two boundaries `<name>+` (n) and `<name>-` (-n)."""
    return [
        Boundary(f"{d.name}{sign}", d.normal * factor, d.metadata)
        for d in directions
        for sign, factor in (("+", 1.0), ("-", -1.0))
    ]


def contrast_accumulators(store: ChunkedStore) -> list[GainAccumulator]:
    """Per direction, running statistics of gain(+n) - gain(-n) [n, K, S] over the latents."""
    _, num_boundaries, num_sets, num_semantics = store.array("manipulated").shape
    accumulators = [GainAccumulator(num_sets, num_semantics) for _ in range(num_boundaries // 2)]
    for _, chunk_gains, active in iter_chunk_gains(store):
        for j, accumulator in enumerate(accumulators):
            both = active[:, 2 * j] & active[:, 2 * j + 1]
            accumulator.add(chunk_gains[both, 2 * j] - chunk_gains[both, 2 * j + 1])
    return accumulators


def name_effects(
    table: DeltaTable,
    contrasts: list[GainAccumulator],
    spread: np.ndarray,
    config: NameConfig,
) -> Naming:
    """Decide the named effects of every direction from the signed-boundary statistics."""
    directions = tuple(name[:-1] for name in table.boundary_names[::2])
    semantics = table.semantic_names
    safe = np.where(spread > 0, spread, np.inf)
    matrix = np.zeros((len(directions), len(semantics)))
    named: dict[str, list[Effect]] = {}
    strongest: dict[str, Effect] = {}
    for j, direction in enumerate(directions):
        mean, stderr = contrasts[j].mean[0], contrasts[j].stderr()[0]  # [S], all layers
        matrix[j] = mean / safe
        layer_tests = {m: table.indistinguishable_layers(m) for m in (2 * j, 2 * j + 1)}
        effects = [
            _effect(table, layer_tests, j, s, mean[s], stderr[s], matrix[j, s])
            for s in range(len(safe))
        ]
        effects.sort(key=lambda e: -abs(e.effect))
        strongest[direction] = effects[0]
        keep = [e for e in effects if e.significant and abs(e.effect) >= config.min_effect]
        named[direction] = keep[: config.top] if _is_named(effects[0], config) else []
    return Naming(directions, semantics, matrix, named, strongest)


def _is_named(effect: Effect, config: NameConfig) -> bool:
    return effect.significant and abs(effect.effect) >= config.min_effect


def _effect(
    table: DeltaTable,
    layer_tests: dict[int, tuple[np.ndarray, np.ndarray]],
    j: int,
    s: int,
    mean: float,
    stderr: float,
    effect: float,
) -> Effect:
    m = 2 * j if mean >= 0 else 2 * j + 1  # the signed boundary that increases the semantic
    peak, mask = layer_tests[m]
    half = Z_95 * stderr if np.isfinite(stderr) else np.inf
    return Effect(
        semantic=table.semantic_names[s],
        sign="+" if mean >= 0 else "-",
        effect=float(effect),
        contrast=float(mean),
        contrast_ci=(float(mean - half), float(mean + half)),
        delta=float(table.delta[m, 0, s]),
        ci_low=float(table.ci_low[m, 0, s]),
        ci_high=float(table.ci_high[m, 0, s]),
        k=int(table.counts[m]),
        peak_layer=int(peak[s]),
        layers=tuple(int(i) for i in np.flatnonzero(mask[:, s])),
        significant=bool(abs(mean) - half > 0),
    )


def layers_text(layers: tuple[int, ...]) -> str:
    """(2, 3, 4, 7) -> '2-4,7': the syntax `--layers` reads."""
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ",".join(parts)


def write_names_csv(naming: Naming, path: Path) -> None:
    """One row per named effect (strongest first per direction); unnamed: empty semantic."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NAMES_COLUMNS)
        for direction in naming.directions:
            effects = naming.named[direction]
            if not effects:
                writer.writerow((direction, "", "", "", "", "", "", naming.strongest[direction].k))
            for e in effects:
                writer.writerow(
                    (
                        direction,
                        e.sign,
                        e.semantic,
                        layers_text(e.layers),
                        f"{e.delta:.9g}",
                        f"{e.ci_low:.9g}",
                        f"{e.ci_high:.9g}",
                        e.k,
                    )
                )


def names_record(naming: Naming, config: NameConfig) -> dict[str, Any]:
    """The `rescore.names` JSON: settings, named effects and the strongest effect of each."""

    def entry(e: Effect) -> dict[str, Any]:
        return {**e.__dict__, "layers": list(e.layers), "contrast_ci": list(e.contrast_ci)}

    return {
        "format": NAMES_FORMAT,
        "format_version": NAMES_FORMAT_VERSION,
        "rescore_version": __version__,
        "distance": config.distance,
        "min_effect": config.min_effect,
        "semantics": list(naming.semantics),
        "directions": {
            d: {
                "named": bool(naming.named[d]),
                "effects": [entry(e) for e in naming.named[d]],
                "strongest": entry(naming.strongest[d]),
                "signed_effect": naming.effects[j].tolist(),
            }
            for j, d in enumerate(naming.directions)
        },
    }


def write_names_png(naming: Naming, path: Path) -> None:
    """Directions x semantics heatmap of the signed effect; named cells outlined with a dot."""
    from .report import _pyplot

    plt = _pyplot()
    rows, cols = len(naming.directions), len(naming.semantics)
    limit = max(float(np.abs(naming.effects).max()), 1e-12)
    figure, axes = plt.subplots(
        figsize=(min(max(4.0, 0.45 * cols + 3.0), 40.0), min(0.35 * rows + 2.2, 40.0))
    )
    image = axes.imshow(naming.effects, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    for j, direction in enumerate(naming.directions):
        for e in naming.named[direction]:
            axes.plot(naming.semantics.index(e.semantic), j, "o", color="black", markersize=4)
    axes.set_xticks(range(cols), naming.semantics, rotation=60, ha="right", fontsize=8)
    labels = [
        f"{d} ({naming.named[d][0].sign}{naming.named[d][0].semantic})"
        if naming.named[d]
        else f"{d} (unnamed)"
        for d in naming.directions
    ]
    axes.set_yticks(range(rows), labels, fontsize=8)
    axes.set_title("signed effect of each direction (mean gain(+n) - gain(-n) / spread; o named)")
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def name_step(
    run: RunDirectory,
    backend: BackendSpec,
    config: NameConfig,
    boundary_paths: list[Path],
    *,
    spec: ModelSpec | None = None,
    progress: bool = True,
) -> Naming:
    """Rescore +-n of every direction into DIR/names.zarr, then write the names outputs."""
    from .pipeline import model_spec_of

    run.ensure_writable()
    spec = spec or model_spec_of(run)
    directions = load_boundaries(boundary_paths)
    if any(d.name.endswith(("+", "-")) for d in directions):
        raise BoundaryError("direction names must not end in + or -; rename the boundary files")
    rescore_config = RescoreConfig(
        config.num_latents, config.seed, config.distance, config.chunk_size, config.batch_size
    )
    with open_model_session(spec, backend) as session:
        rescored = rescore_boundaries(
            session,
            spec,
            signed_boundaries(directions),
            run.root / "names.zarr",
            rescore_config,
            progress=progress,
        )
        table = delta_statistics(rescored.store, accumulators=rescored.accumulators)
        spread = semantic_spread(run, rescored.store)
        naming = name_effects(table, contrast_accumulators(rescored.store), spread, config)
        _write_grids(session, naming, directions, run.root / "grids", config)
    write_names_csv(naming, run.root / "names.csv")
    (run.root / "names.json").write_text(json.dumps(names_record(naming, config), indent=2))
    write_names_png(naming, run.root / "names.png")
    return naming


def semantic_spread(run: RunDirectory, store: ChunkedStore) -> np.ndarray:
    """Std of each semantic [S]: over (up to 10,000 of) DIR/samples.zarr's samples when they were
    scored with the same semantics, else over the naming latents' original scores."""
    semantics = list(store.meta["semantic_names"])
    if run.samples.exists():
        from .sample import open_samples

        samples = open_samples(run.samples)
        if list(samples.meta["semantic_names"]) == semantics:
            rows = min(samples.num_samples, _SPREAD_SAMPLES)
            return np.std(samples.array("scores")[:rows], axis=0, dtype=np.float64)
    return np.std(store.array("original")[:], axis=0, dtype=np.float64)


def _write_grids(session, naming: Naming, directions, directory: Path, config: NameConfig) -> None:
    """A manipulation grid (at the strongest named effect's layers) per top named direction."""
    by_name = {d.name: d for d in directions}
    ranked = sorted(
        (d for d in naming.directions if naming.named[d]),
        key=lambda d: -abs(naming.named[d][0].effect),
    )
    for name in ranked[: config.grids]:
        effect = naming.named[name][0]
        mask = np.zeros(session.geometry.num_layers, bool)
        mask[list(effect.layers)] = True
        image = manipulation_grid(session, by_name[name], mask, distance=config.distance)
        save_grid(image, directory, by_name[name], layers_text(effect.layers))
