"""Reports of a rescore run: the summary JSON and two heatmaps.

* `heatmap.png` follows the paper's Figure 3(a): rows are layers, columns are the semantics whose
  boundaries were rescored (each boundary scored on its own semantic), each column divided by its
  maximum over layers. The peak layer carries a star; the other layers of the simultaneous 95%
  peak set (`peaks`: no other layer beats them) carry a dot. Columns where no layer's Delta is
  distinguishable from 0 are greyed and labelled "no effect", not ranked. The title gives K per
  boundary (a range under adaptive K).
* `cross_effects.png`: boundary x semantic matrix of Delta when moving all layers. Semantics have
  different units, so each Delta is first divided by its semantic's score spread (standard
  deviation of the original scores), then each row by the boundary's own normalised effect: how
  entangled each direction is, in comparable units.

Comparisons across semantics (`most_relevant`, cross effects) use the same normalisation:
Delta_s / sd_s, with sd_s the spread of semantic s's scores over the rescored latents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .peaks import TIE_RTOL
from .stats import DeltaTable
from .version import __version__

SUMMARY_FORMAT = "rescore.summary"
SUMMARY_FORMAT_VERSION = 2
NORMALISATION = "delta / sd of the semantic's original scores over the rescored latents"


PEAK_SETS_ELIMINATION = (
    "successive elimination: the layers never eliminated, simultaneous 95% over layers and "
    "(boundary, semantic of interest) pairs (Bonferroni, time-uniform); other semantics: every "
    "layer (not certified)"
)


def images_used(table: DeltaTable) -> dict[str, Any]:
    """Images the run scored (one original per latent, plus one per moved (boundary, layer
    set) and latent) against a fixed-K run at the largest K over all scored sets."""
    scored = table.set_counts > 0  # [M, K]
    used = table.count + int(table.set_counts.sum())
    fixed = table.count * (1 + int(scored.sum()))
    return {
        "used": used,
        "fixed_k": fixed,
        "saved": fixed - used,
        "saved_fraction": (fixed - used) / fixed if fixed else 0.0,
    }


def own_semantic_index(table: DeltaTable) -> dict[int, int]:
    """Boundary index -> index of the semantic it is named after (others are skipped)."""
    return {
        m: table.semantic_names.index(name)
        for m, name in enumerate(table.boundary_names)
        if name in table.semantic_names
    }


def layer_wise_boundaries(table: DeltaTable) -> np.ndarray:
    """bool [M]: boundaries whose per-layer rows were scored (Z boundaries: all layers only)."""
    return ~np.isnan(table.delta[:, 1:]).all(axis=(1, 2))


def normalised_delta(table: DeltaTable) -> np.ndarray:
    """Delta [M, K, S] divided by each semantic's score spread (comparable across semantics);
    NaN where a semantic does not vary."""
    spread = np.where(table.spread > 0, table.spread, np.nan)
    return table.delta / spread


def k_label(table: DeltaTable) -> str:
    """'K=2000', or 'K=340..2000 per boundary' when adaptive K stopped boundaries apart."""
    low, high = int(table.counts.min()), int(table.counts.max())
    return f"K={high}" if low == high else f"K={low}..{high} per boundary"


def _ranking(table: DeltaTable, m: int) -> dict[str, Any]:
    peaks, mask, ranked = table.peak_layers(m)
    return {
        semantic: {
            "peak_layer": int(peaks[s]) if ranked[s] else None,
            "indistinguishable_layers": np.flatnonzero(mask[:, s]).tolist() if ranked[s] else [],
            "no_effect": not bool(ranked[s]),
        }
        for s, semantic in enumerate(table.semantic_names)
    }


def summarize(
    table: DeltaTable,
    *,
    distance: float,
    finished: dict | None = None,
    store_meta: dict | None = None,
) -> dict[str, Any]:
    """Per boundary: Delta at all layers, per-layer Delta, the peak layer and its simultaneous
    95% peak set (or "no effect"); the layer ranking of every (boundary, semantic); cross effects
    normalised per semantic; the CI method, K per boundary, tie tolerance and flags.

    Z boundaries (all layers only) report the all-layers row; their layer entries are null/empty.
    `store_meta` (the rescore store's attributes) adds each boundary's space and HiGAN's
    recommended `manipulate_layers`."""
    own = own_semantic_index(table)
    normalised = normalised_delta(table)
    layer_wise = layer_wise_boundaries(table)
    meta = store_meta or {}
    spaces = meta.get("boundary_spaces") or [None] * len(table.boundary_names)
    recommended = meta.get("boundary_manipulate_layers") or [None] * len(table.boundary_names)
    boundaries: dict[str, Any] = {}
    ranking: dict[str, Any] = {}
    for m, name in enumerate(table.boundary_names):
        if layer_wise[m]:
            ranking[name] = _ranking(table, m)
        else:
            ranking[name] = {
                semantic: {"peak_layer": None, "indistinguishable_layers": [], "no_effect": None}
                for semantic in table.semantic_names
            }
        if m not in own:
            continue
        s = own[m]
        entry = ranking[name][table.semantic_names[s]]
        per_layer, stderr = table.delta[m, 1:, s], table.stderr[m, 1:, s]
        boundaries[name] = {
            "semantic": name,
            "space": spaces[m],
            "manipulate_layers": recommended[m],
            "k": int(table.counts[m]),
            "delta_all_layers": float(table.delta[m, 0, s]),
            "normalised_delta_all_layers": float(normalised[m, 0, s]),
            "stderr_all_layers": float(table.stderr[m, 0, s]),
            "ci_all_layers": [float(table.ci_low[m, 0, s]), float(table.ci_high[m, 0, s])],
            "ci_method_all_layers": str(table.methods[m, 0, s]),
            "flags_all_layers": _flag_list(table.flags[m, 0, s]),
        }
        if not layer_wise[m]:
            boundaries[name].update(
                no_effect=bool(table.no_effect[m, 0, s]),
                peak_layer=None,
                peak_delta=None,
                indistinguishable_layers=[],
                no_effect_layers=[],
                layer_delta=[],
                layer_stderr=[],
                layer_ci=[],
            )
            continue
        boundaries[name].update(
            no_effect=entry["no_effect"],
            peak_layer=entry["peak_layer"],
            peak_delta=None if entry["no_effect"] else float(per_layer[entry["peak_layer"]]),
            indistinguishable_layers=entry["indistinguishable_layers"],
            no_effect_layers=np.flatnonzero(table.no_effect[m, 1:, s]).tolist(),
            layer_delta=[float(v) for v in per_layer],
            layer_k=[int(c) for c in table.set_counts[m, 1:]],
            layer_stderr=[float(v) for v in stderr],
            layer_ci=[
                [float(a), float(b)]
                for a, b in zip(table.ci_low[m, 1:, s], table.ci_high[m, 1:, s], strict=True)
            ],
        )
    most_relevant = sorted(
        boundaries,
        key=lambda n: np.nan_to_num(boundaries[n]["normalised_delta_all_layers"], nan=-np.inf),
        reverse=True,
    )
    cross_semantics = [table.semantic_names[s] for s in own.values()]
    cross_columns = [table.semantic_names.index(c) for c in cross_semantics]
    methods, method_counts = np.unique(table.methods, return_counts=True)
    flags = [f for cell in table.flags.ravel() for f in _flag_list(cell)]
    flag_names, flag_counts = np.unique(np.array(flags, dtype=str), return_counts=True)
    summary = {
        "format": SUMMARY_FORMAT,
        "format_version": SUMMARY_FORMAT_VERSION,
        "rescore_version": __version__,
        "num_latents": table.count,
        "k_per_boundary": {
            n: int(c) for n, c in zip(table.boundary_names, table.counts, strict=True)
        },
        "ci_method": table.ci_method,
        "ci_params": table.ci_params,
        "ci_methods_used": {str(k): int(v) for k, v in zip(methods, method_counts, strict=True)},
        "flag_counts": {str(k): int(v) for k, v in zip(flag_names, flag_counts, strict=True)},
        "peak_sets": PEAK_SETS_ELIMINATION
        if table.certified is not None
        else "simultaneous 95% (Bonferroni over all ordered layer pairs)",
        "images": images_used(table),
        "elimination": (finished or {}).get("elimination"),
        "tie_rtol": TIE_RTOL,
        "tie_tolerance": _per_semantic(table, table.tie_tolerance),
        "score_range_width": _per_semantic(table, table.ranges),
        "score_spread": _per_semantic(table, table.spread),
        "normalisation": NORMALISATION,
        "distance": distance,
        "layer_wise": bool(meta.get("layer_wise", True)),  # False: all-layers rows only (PGGAN)
        "layers": list(table.layer_labels[1:]),
        "most_relevant": most_relevant,
        "boundaries": boundaries,
        "unmatched_boundaries": [n for n in table.boundary_names if n not in boundaries],
        "layer_ranking": ranking,
        "cross_effects": {
            "semantics": cross_semantics,
            "delta_all_layers": {
                name: [float(table.delta[m, 0, c]) for c in cross_columns]
                for m, name in enumerate(table.boundary_names)
            },
            "normalised_delta_all_layers": {
                name: [float(normalised[m, 0, c]) for c in cross_columns]
                for m, name in enumerate(table.boundary_names)
            },
        },
        "run": finished or {},
    }
    return _json_safe(summary)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _flag_list(cell: str) -> list[str]:
    return [f for f in str(cell).split(";") if f]


def _per_semantic(table: DeltaTable, values: np.ndarray) -> dict[str, float | None]:
    return {
        name: (float(v) if np.isfinite(v) else None)
        for name, v in zip(table.semantic_names, values, strict=True)
    }


def write_summary(summary: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, json.dumps(summary, indent=2))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_heatmap(table: DeltaTable, path: Path) -> None:
    """Layers x semantics heatmap of Delta, each semantic normalized to its maximum over layers;
    star = peak layer, dot = in the simultaneous 95% peak set; grey "no effect" columns."""
    plt = _pyplot()
    layer_wise = layer_wise_boundaries(table)
    own = {m: s for m, s in own_semantic_index(table).items() if layer_wise[m]}
    # columns ordered by peak layer, so the hierarchy reads from left (early) to right (late)
    own = dict(
        sorted(
            own.items(),
            key=lambda item: (
                int(np.argmax(table.delta[item[0], 1:, item[1]])),
                table.boundary_names[item[0]],
            ),
        )
    )
    num_layers = len(table.layer_labels) - 1
    grid = np.zeros((num_layers, max(len(own), 1)))
    names = []
    figure, axes = plt.subplots(
        figsize=(min(max(4.0, 0.45 * len(own) + 2.5), 40.0), 0.35 * num_layers + 2.2)
    )
    for column, (m, s) in enumerate(own.items()):
        names.append(table.boundary_names[m])
        per_layer = table.delta[m, 1:, s]
        peak = per_layer.max()
        grid[:, column] = per_layer / peak if peak > 0 else 0.0
        peaks, mask, ranked = table.peak_layers(m)
        if not ranked[s]:
            grid[:, column] = np.nan
            axes.text(
                column,
                num_layers / 2 - 0.5,
                "no effect",
                rotation=90,
                ha="center",
                va="center",
                fontsize=7,
                color="black",
            )
            continue
        for layer in np.flatnonzero(mask[:, s]):
            marker = "*" if layer == peaks[s] else "."
            axes.plot(
                column,
                layer,
                marker,
                color="white",
                markersize=9 if marker == "*" else 6,
                markeredgecolor="black",
                markeredgewidth=0.4,
            )
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = axes.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(num_layers), [f"layer {i}" for i in range(num_layers)], fontsize=8)
    axes.set_title(
        f"Delta per layer / its max over layers, per semantic ({k_label(table)}; {table.ci_method}"
        f" CI)\n* peak, . in the simultaneous 95% peak set; grey: no effect distinguishable "
        f"from 0",
        fontsize=8,
    )
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, dpi=110)
    plt.close(figure)


def write_cross_effects(table: DeltaTable, path: Path) -> None:
    """Boundary x semantic heatmap of Delta (all layers moved), each Delta divided by its
    semantic's score spread, then each row by the boundary's own normalised effect."""
    plt = _pyplot()
    own = own_semantic_index(table)
    columns = list(own.values())
    rows = list(range(len(table.boundary_names)))
    normalised = np.nan_to_num(normalised_delta(table)[:, 0, :], nan=0.0)  # [M, S]
    matrix = normalised[:, columns] if columns else np.zeros((len(rows), 1))
    for m in rows:
        reference = normalised[m, own[m]] if m in own else matrix[m].max()
        matrix[m] = matrix[m] / reference if reference > 0 else 0.0
    size = max(len(columns), 1)
    figure, axes = plt.subplots(
        figsize=(min(max(0.45 * size + 3.0, 5.5), 40.0), min(0.4 * len(rows) + 2.2, 40.0))
    )
    image = axes.imshow(
        matrix, aspect="auto", cmap="magma", vmin=0.0, vmax=max(1.0, float(matrix.max()))
    )
    axes.set_xticks(
        range(len(columns)),
        [table.semantic_names[c] for c in columns],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    axes.set_yticks(rows, [f"move {n}" for n in table.boundary_names], fontsize=8)
    axes.set_title(
        f"Cross effects (all layers moved, {k_label(table)}):\n(Delta_s / sd_s) / own "
        f"(Delta / sd), sd_s = spread of semantic s's scores",
        fontsize=9,
    )
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, dpi=110)
    plt.close(figure)
