"""Reading a finished run directory: boundaries, the Delta table and the layer ranking.

Everything here reads the files a run wrote (`boundaries/`, `rescore.csv`, `summary.json`; see
the README's "Output formats"), with NumPy and the standard library only (and fsspec for a run
directory given as an object-store URL, ``s3://bucket/run``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.engine import boundary as _boundary
from rescore.engine.errors import StoreError
from rescore.engine.location import StoreUrl, as_location

SUMMARY_FORMAT = "rescore.summary"


@dataclass(frozen=True, eq=False)
class DeltaRecords:
    """A run's Delta table (`rescore.csv`) as arrays [M, K, S]: boundary x layer set x semantic.

    Layer set 0 is 'all' (every layer moved), 1 + l is layer l. Cells the run did not score
    (the per-layer rows of Z-space boundaries) are NaN.
    """

    boundary_names: tuple[str, ...]
    layer_labels: tuple[str, ...]
    semantic_names: tuple[str, ...]
    delta: np.ndarray = field(repr=False)  # [M, K, S] float64
    stderr: np.ndarray = field(repr=False)
    ci_low: np.ndarray = field(repr=False)
    ci_high: np.ndarray = field(repr=False)
    k: np.ndarray = field(repr=False)  # [M] latents per boundary

    def delta_of(self, boundary: str, semantic: str, layer: str | int = "all") -> float:
        """Delta of `semantic` when moving along `boundary` on `layer` ('all' or an index)."""
        return float(
            self.delta[
                self.boundary_names.index(boundary),
                self.layer_labels.index(str(layer)),
                self.semantic_names.index(semantic),
            ]
        )


def load_boundaries(
    paths: str | Path | StoreUrl | list[str | Path | StoreUrl],
) -> list[_boundary.Boundary]:
    """Boundaries from files, directories and HiGAN boundary lists (`FILE:z` names a space);
    a directory may be an object-store URL (``s3://bucket/run/boundaries``)."""
    listed = [paths] if isinstance(paths, str | Path | StoreUrl) else list(paths)
    return _boundary.load_boundaries([_url_or_path(p) for p in listed])


def _url_or_path(entry: str | Path | StoreUrl) -> str | Path | StoreUrl:
    is_url = isinstance(entry, str) and not isinstance(as_location(entry), Path)
    return as_location(entry) if is_url else entry


def read_summary(run_dir: str | Path | StoreUrl) -> dict[str, Any]:
    """`summary.json` of a finished run (format `rescore.summary`)."""
    path = as_location(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_bytes())
    except FileNotFoundError as error:
        raise StoreError(f"{path} not found; run `rescore rescore` or `rescore report`") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StoreError(f"{path} is not valid JSON ({error}); run `rescore report`") from error
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise StoreError(f"{path} is not a rescore summary; run `rescore report`")
    return summary


def read_layer_ranking(run_dir: str | Path | StoreUrl) -> dict[str, dict[str, dict[str, Any]]]:
    """boundary -> semantic -> {'peak_layer', 'indistinguishable_layers'} (None / [] for Z)."""
    return read_summary(run_dir)["layer_ranking"]


def read_delta_table(run_dir: str | Path | StoreUrl) -> DeltaRecords:
    """The run's `rescore.csv` as `DeltaRecords` (columns are read by name)."""
    path = as_location(run_dir) / "rescore.csv"
    try:
        text = path.read_bytes().decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except FileNotFoundError as error:
        raise StoreError(f"{path} not found; run `rescore rescore` first") from error
    needed = {"boundary", "layer", "semantic", "delta", "stderr", "ci_low", "ci_high", "k"}
    if not rows or not needed <= set(rows[0]):
        raise StoreError(f"{path} is empty or lacks columns {sorted(needed)}; rerun the report")
    boundaries = tuple(dict.fromkeys(r["boundary"] for r in rows))
    semantics = tuple(dict.fromkeys(r["semantic"] for r in rows))
    layers = ("all", *sorted({r["layer"] for r in rows} - {"all"}, key=int))
    shape = (len(boundaries), len(layers), len(semantics))
    values = {name: np.full(shape, np.nan) for name in ("delta", "stderr", "ci_low", "ci_high")}
    k = np.zeros(len(boundaries), np.int64)
    at_b, at_l, at_s = (
        {n: i for i, n in enumerate(names)} for names in (boundaries, layers, semantics)
    )
    for row in rows:
        m = at_b[row["boundary"]]
        cell = (m, at_l[row["layer"]], at_s[row["semantic"]])
        for name, array in values.items():
            array[cell] = float(row[name])
        k[m] = int(row["k"])
    return DeltaRecords(boundaries, layers, semantics, k=k, **values)
