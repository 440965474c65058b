"""Reports of a rescore run: the summary JSON and two heatmaps.

* `heatmap.png` follows the paper's Figure 3(a): rows are layers, columns are the semantics whose
  boundaries were rescored (each boundary scored on its own semantic), each column divided by its
  maximum over layers. The peak layer carries a star; layers statistically indistinguishable from
  it (paired difference not significant at 95%) carry a dot.
* `cross_effects.png`: boundary x semantic matrix of Delta when moving all layers, each row divided
  by the boundary's effect on its own semantic: how entangled each direction is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .stats import DeltaTable
from .version import __version__

SUMMARY_FORMAT = "rescore.summary"
SUMMARY_FORMAT_VERSION = 1


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


def summarize(
    table: DeltaTable,
    *,
    distance: float,
    finished: dict | None = None,
    store_meta: dict | None = None,
) -> dict[str, Any]:
    """Per boundary: Delta at all layers, per-layer Delta, peak layer and the layers
    indistinguishable from it; the layer ranking of every (boundary, semantic); cross effects.

    Z boundaries (all layers only) report the all-layers row; their layer entries are null/empty.
    `store_meta` (the rescore store's attributes) adds each boundary's space and HiGAN's
    recommended `manipulate_layers`."""
    own = own_semantic_index(table)
    layer_wise = layer_wise_boundaries(table)
    meta = store_meta or {}
    spaces = meta.get("boundary_spaces") or [None] * len(table.boundary_names)
    recommended = meta.get("boundary_manipulate_layers") or [None] * len(table.boundary_names)
    boundaries: dict[str, Any] = {}
    ranking: dict[str, Any] = {}
    for m, name in enumerate(table.boundary_names):
        if not layer_wise[m]:
            ranking[name] = {
                semantic: {"peak_layer": None, "indistinguishable_layers": []}
                for semantic in table.semantic_names
            }
            if m in own:
                boundaries[name] = {
                    **_all_layers_entry(table, m, own[m]),
                    "space": spaces[m],
                    "manipulate_layers": recommended[m],
                    "peak_layer": None,
                    "peak_delta": None,
                    "indistinguishable_layers": [],
                    "layer_delta": [],
                    "layer_stderr": [],
                }
            continue
        peaks, mask = table.indistinguishable_layers(m)
        ranking[name] = {
            semantic: {
                "peak_layer": int(peaks[s]),
                "indistinguishable_layers": np.flatnonzero(mask[:, s]).tolist(),
            }
            for s, semantic in enumerate(table.semantic_names)
        }
        if m not in own:
            continue
        s = own[m]
        per_layer, stderr = table.delta[m, 1:, s], table.stderr[m, 1:, s]
        boundaries[name] = {
            **_all_layers_entry(table, m, s),
            "space": spaces[m],
            "manipulate_layers": recommended[m],
            "peak_layer": int(peaks[s]),
            "peak_delta": float(per_layer[peaks[s]]),
            "indistinguishable_layers": np.flatnonzero(mask[:, s]).tolist(),
            "layer_delta": [float(v) for v in per_layer],
            "layer_stderr": [float(v) for v in stderr],
        }
    most_relevant = sorted(
        boundaries, key=lambda n: boundaries[n]["delta_all_layers"], reverse=True
    )
    cross_semantics = [table.semantic_names[s] for s in own.values()]
    return {
        "format": SUMMARY_FORMAT,
        "format_version": SUMMARY_FORMAT_VERSION,
        "rescore_version": __version__,
        "num_latents": table.count,
        "k_per_boundary": {
            n: int(c) for n, c in zip(table.boundary_names, table.counts, strict=True)
        },
        "ci_method": table.ci_method,
        "distance": distance,
        "layers": list(table.layer_labels[1:]),
        "most_relevant": most_relevant,
        "boundaries": boundaries,
        "unmatched_boundaries": [n for n in table.boundary_names if n not in boundaries],
        "layer_ranking": ranking,
        "cross_effects": {
            "semantics": cross_semantics,
            "delta_all_layers": {
                name: [
                    float(table.delta[m, 0, table.semantic_names.index(c)]) for c in cross_semantics
                ]
                for m, name in enumerate(table.boundary_names)
            },
        },
        "run": finished or {},
    }


def _all_layers_entry(table: DeltaTable, m: int, s: int) -> dict[str, Any]:
    """Boundary m scored on its own semantic s, all layers moved."""
    return {
        "semantic": table.boundary_names[m],
        "k": int(table.counts[m]),
        "delta_all_layers": float(table.delta[m, 0, s]),
        "stderr_all_layers": float(table.stderr[m, 0, s]),
        "ci_all_layers": [float(table.ci_low[m, 0, s]), float(table.ci_high[m, 0, s])],
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
    star = peak layer, dot = statistically indistinguishable from the peak."""
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
        peaks, mask = table.indistinguishable_layers(m)
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
    image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(num_layers), [f"layer {i}" for i in range(num_layers)], fontsize=8)
    axes.set_title(
        f"Delta per layer, normalized per semantic (K={table.count}; "
        f"* peak, . not distinguishable at 95%)",
        fontsize=9,
    )
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, dpi=110)
    plt.close(figure)


def write_cross_effects(table: DeltaTable, path: Path) -> None:
    """Boundary x semantic heatmap of Delta (all layers moved), rows divided by the own effect."""
    plt = _pyplot()
    own = own_semantic_index(table)
    columns = list(own.values())
    rows = list(range(len(table.boundary_names)))
    matrix = table.delta[:, 0, :][:, columns] if columns else np.zeros((len(rows), 1))
    for m in rows:
        reference = table.delta[m, 0, own[m]] if m in own else matrix[m].max()
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
        "Cross effects (all layers moved):\nDelta of each semantic / own Delta", fontsize=9
    )
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, dpi=110)
    plt.close(figure)
