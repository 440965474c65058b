"""rescore: layer-wise semantic analysis of GANs. This module is the public Python API.

What other applications use to read rescore's outputs: boundaries (HiGAN / InterFaceGAN files and
rescore's own with their sidecars), the Zarr stores of a run, its Delta table and layer ranking.
Importing it (or any function below) never imports torch; the surface changes only with a
version bump (`__version__`).

    import rescore

    boundaries = rescore.load_boundaries("runs/bedroom/boundaries")   # list[rescore.Boundary]
    table = rescore.read_delta_table("runs/bedroom")                  # Delta per cell
    table.delta_of("wood", "wood", layer="all")
    ranking = rescore.read_layer_ranking("runs/bedroom")              # peak layer per pair
    samples = rescore.open_samples("runs/bedroom/samples.zarr")       # samples.array("w")[:10]

Names are resolved lazily, so `import rescore` stays instant for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rescore.engine.boundary import Boundary, load_boundary
    from rescore.engine.readers import open_rescore, open_samples

    from .runs import (
        DeltaRecords,
        load_boundaries,
        read_delta_table,
        read_layer_ranking,
        read_summary,
    )

__all__ = [
    "Boundary",
    "DeltaRecords",
    "__version__",
    "load_boundaries",
    "load_boundary",
    "open_rescore",
    "open_samples",
    "read_delta_table",
    "read_layer_ranking",
    "read_summary",
]

# public name -> module that defines it (imported on first use)
_HOMES = {
    "__version__": "rescore.engine.version",
    "Boundary": "rescore.engine.boundary",
    "load_boundary": "rescore.engine.boundary",
    "open_samples": "rescore.engine.readers",
    "open_rescore": "rescore.engine.readers",
    "DeltaRecords": "rescore.runs",
    "load_boundaries": "rescore.runs",
    "read_delta_table": "rescore.runs",
    "read_layer_ranking": "rescore.runs",
    "read_summary": "rescore.runs",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rescore' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
