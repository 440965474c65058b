"""Reports of a rescore run: the summary JSON (peak layer per semantic) and the heatmap PNG.

The heatmap follows the paper's Figure 3(a): rows are layers, columns are the semantics whose
boundaries were rescored (each boundary scored on its own semantic), each column divided by its
maximum over layers, so the layer where a semantic moves most is brightest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .stats import DeltaTable
from .version import __version__

SUMMARY_FORMAT = "rescore.summary"
SUMMARY_FORMAT_VERSION = 1


def own_semantic_deltas(table: DeltaTable) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """For each boundary named after a scored semantic: (semantic index, delta [K], stderr [K])."""
    result = {}
    for m, name in enumerate(table.boundary_names):
        if name in table.semantic_names:
            s = table.semantic_names.index(name)
            result[name] = (s, table.delta[m, :, s], table.stderr[m, :, s])
    return result


def summarize(table: DeltaTable, *, distance: float) -> dict[str, Any]:
    """Per boundary: Delta when moving all layers, per-layer Delta, and the peak layer."""
    boundaries = {}
    for name, (_, delta, stderr) in own_semantic_deltas(table).items():
        per_layer = delta[1:]
        peak = int(np.argmax(per_layer))
        boundaries[name] = {
            "semantic": name,
            "delta_all_layers": float(delta[0]),
            "stderr_all_layers": float(stderr[0]),
            "peak_layer": peak,
            "peak_delta": float(per_layer[peak]),
            "layer_delta": [float(v) for v in per_layer],
            "layer_stderr": [float(v) for v in stderr[1:]],
        }
    ranking = sorted(boundaries, key=lambda n: boundaries[n]["delta_all_layers"], reverse=True)
    return {
        "format": SUMMARY_FORMAT,
        "format_version": SUMMARY_FORMAT_VERSION,
        "rescore_version": __version__,
        "num_latents": table.count,
        "distance": distance,
        "layers": list(table.layer_labels[1:]),
        "most_relevant": ranking,
        "boundaries": boundaries,
        "unmatched_boundaries": [n for n in table.boundary_names if n not in boundaries],
    }


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2))


def write_heatmap(table: DeltaTable, path: Path) -> None:
    """Layers x semantics heatmap of Delta, each semantic normalized to its maximum over layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = own_semantic_deltas(table)
    names = list(own)
    num_layers = len(table.layer_labels) - 1
    grid = np.zeros((num_layers, max(len(names), 1)))
    for column, name in enumerate(names):
        per_layer = own[name][1][1:]
        peak = per_layer.max()
        grid[:, column] = per_layer / peak if peak > 0 else 0.0
    width = min(max(4.0, 0.45 * len(names) + 2.0), 40.0)
    figure, axes = plt.subplots(figsize=(width, 0.35 * num_layers + 2.0))
    image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(num_layers), [f"layer {i}" for i in range(num_layers)], fontsize=8)
    axes.set_title(f"Delta s per layer (normalized per semantic, K={table.count})")
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
