"""The output directory of a run: a documented, versioned interface other applications read.

DIR/samples.zarr     sampled codes and scores              (rescore.samples, format 2)
DIR/boundaries/      <semantic>.npy + <semantic>.json      (rescore.boundary, format 1)
DIR/rescore.zarr     per-sample original / manipulated scores (rescore.rescore, format 2)
DIR/rescore.csv      boundary,layer,semantic,delta,stderr,ci_low,ci_high,k
DIR/summary.json     peak layer per semantic               (rescore.summary, format 1)
DIR/heatmap.png      layers x semantics, normalized per semantic (paper Fig. 3a)
DIR/cross_effects.png  boundary x semantic Delta / own Delta (entanglement)
DIR/projections.zarr   signed distance of every sample to every boundary (rescore project)

Every file is written atomically (temporary sibling + rename); the stores carry crc32c checksums
(`rescore check -o DIR` finds damaged chunks and marks them for recomputation). DIR may also be an
object-store URL (`location.StoreUrl`): each file is then one PUT, whole or absent.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from .atomic import clean_leftovers
from .errors import OutputError
from .location import Location, StoreUrl, check_writable


@dataclass(frozen=True)
class RunDirectory:
    """Paths inside one run's output directory (a local `Path` or an object-store `StoreUrl`;
    the properties below are of the same kind)."""

    root: Location

    @property
    def samples(self) -> Location:
        return self.root / "samples.zarr"

    @property
    def boundaries(self) -> Location:
        return self.root / "boundaries"

    @property
    def rescore_store(self) -> Location:
        return self.root / "rescore.zarr"

    @property
    def table(self) -> Location:
        return self.root / "rescore.csv"

    @property
    def summary(self) -> Location:
        return self.root / "summary.json"

    @property
    def heatmap(self) -> Location:
        return self.root / "heatmap.png"

    @property
    def projections(self) -> Location:
        return self.root / "projections.zarr"

    @property
    def cross_effects(self) -> Location:
        return self.root / "cross_effects.png"

    def ensure_writable(self) -> RunDirectory:
        """Create the directory if needed and prove it is writable, before any work starts."""
        if isinstance(self.root, StoreUrl):
            check_writable(self.root)  # an object store has no directories and no leftovers
            return self
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            os.remove(probe)
            clean_leftovers(self.root)  # what a killed earlier run left behind
            clean_leftovers(self.boundaries)
        except OSError as error:
            raise OutputError(
                f"cannot write to output directory {self.root} ({error.strerror or error}); "
                f"choose a writable --out"
            ) from error
        return self
