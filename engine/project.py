"""`rescore project`: signed distance of every sampled code to every boundary, streamed.

Writes DIR/projections.zarr (format `rescore.projections`): `distance` [N, M] for W boundaries
(against `w`), for W+ boundaries (against `wp`) `distance_wp` [N, M', L], and for Z boundaries
(against `z`) `distance_z` [N, M'']. Offsets are the
SVM intercepts recorded in the sidecars (0 for files without one), so the sign says on which side
of the fitted hyperplane a code lies.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np

from rescore.kernels.project import project

from .boundary import Boundary
from .errors import BoundaryError, ScoreError, StoreMismatchError
from .store import ArraySpec, ChunkedStore

PROJECTIONS_KIND = "rescore.projections"
log = logging.getLogger(__name__)


def _offsets(boundaries: list[Boundary]) -> np.ndarray:
    rows = []
    for b in boundaries:
        offset = b.metadata.get("offset", 0.0)
        rows.append(np.atleast_1d(np.asarray(offset, np.float32)))
    return np.stack(rows) if boundaries[0].space == "wp" else np.concatenate(rows)


def boundary_digest(boundary: Boundary) -> str:
    """SHA-256 of a boundary's normal and offset (what its distances depend on)."""
    digest = hashlib.sha256(np.ascontiguousarray(boundary.normal, np.float32).tobytes())
    digest.update(np.asarray(boundary.metadata.get("offset", 0.0), np.float64).tobytes())
    return digest.hexdigest()


def project_samples(samples: ChunkedStore, boundaries: list[Boundary], path: Path) -> ChunkedStore:
    """Project the samples store's codes onto `boundaries` into a new store at `path`."""
    groups = {space: [b for b in boundaries if b.space == space] for space in ("w", "wp", "z")}
    _check_dimensions(samples, groups)
    if groups["wp"] and not samples.has("wp"):
        raise ScoreError(
            f"{samples.path} holds no W+ codes for the per-layer boundaries "
            f"{[b.name for b in groups['wp']]}; sample with --wplus"
        )
    n, arrays = samples.num_samples, []
    if groups["w"]:
        arrays.append(ArraySpec("distance", (n, len(groups["w"])), ("sample", "boundary")))
    if groups["z"]:
        arrays.append(ArraySpec("distance_z", (n, len(groups["z"])), ("sample", "boundary_z")))
    if groups["wp"]:
        layers = samples.array("wp").shape[1]
        arrays.append(
            ArraySpec(
                "distance_wp", (n, len(groups["wp"]), layers), ("sample", "boundary_wp", "layer")
            )
        )
    identity = {
        "samples": samples.meta["identity"],
        "boundaries": [  # digests too: a refit boundary of the same name is another boundary
            {"name": b.name, "space": b.space, "sha256": boundary_digest(b)} for b in boundaries
        ],
    }

    def create() -> ChunkedStore:
        return ChunkedStore.create_or_resume(
            path,
            kind=PROJECTIONS_KIND,
            identity=identity,
            num_samples=n,
            chunk_size=samples.chunk_size,
            arrays=arrays,
            attrs={
                "boundary_names": [b.name for b in groups["w"]],
                "boundary_wp_names": [b.name for b in groups["wp"]],
                "boundary_z_names": [b.name for b in groups["z"]],
            },
        )

    try:
        store = create()
    except StoreMismatchError:  # derived data of other boundaries (a refit) or other samples
        log.warning("%s holds projections of other boundaries or samples; replacing it", path)
        shutil.rmtree(path)
        store = create()
    plans = [
        (space, name, np.concatenate([b.normal for b in groups[space]]), _offsets(groups[space]))
        for space, name in (("w", "distance"), ("wp", "distance_wp"), ("z", "distance_z"))
        if groups[space]
    ]  # normals [M, D] or [M, L, D]
    for chunk in store.pending_chunks():
        start, stop = store.chunk_range(chunk)
        store.write_chunk(
            chunk,
            {
                name: project(samples.array(space)[start:stop], normals, offsets)
                for space, name, normals, offsets in plans
            },
        )
    return store


def _check_dimensions(samples: ChunkedStore, groups: dict[str, list[Boundary]]) -> None:
    """Refuse boundaries whose dimension (or layer count) differs from the stored codes'."""
    for space, members in groups.items():
        stored = space if samples.has(space) else "w"  # W+ boundaries: at least D must fit w
        shape = tuple(samples.array(stored).shape[1:])  # (Z,), (D,) or (L, D)
        for boundary in members:
            found = tuple(boundary.normal.shape[1:])
            if found != shape and (stored == space or found[-1:] != shape[-1:]):
                raise BoundaryError(
                    f"boundary '{boundary.name}' has shape {boundary.normal.shape} but the "
                    f"samples store's {stored} codes have shape "
                    f"(N, {', '.join(map(str, shape))}); use boundaries fitted on this model"
                )
