"""Batching helpers between the engine's chunks and a session's batches.

Scores depend (at float rounding) on which codes share a batch, so they are computed on a fixed
grid of micro-batches aligned to sample indices: batch b covers samples [b*B, (b+1)*B) whatever
the chunking. A chunk must then start on the grid (chunk size a multiple of B), and B is part of
a store's identity: a resume with another batch size would silently mix bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rescore.export.prefix import score_layer_sets_on_grid as score_staged
from rescore.export.session import ScoringSession, offered_prefix_reuse
from rescore.kernels.manipulate import manipulate

from .errors import ScoreError


def session_identity(session: ScoringSession) -> dict[str, Any]:
    """What of a session determines stored scores (part of every store's identity)."""
    return {
        "semantic_names": list(session.semantic_names),
        "truncation": [round(float(c), 6) for c in session.geometry.truncation],
        "backend": session.info.backend,
        "precision": session.info.precision,
    }


def session_record(session: ScoringSession) -> dict[str, str]:
    """Which backend, precision and device produced a store (its `session` attribute)."""
    info = session.info
    return {"backend": info.backend, "precision": info.precision, "device": info.device}


def map_latents(session: ScoringSession, z: np.ndarray, batch_size: int) -> np.ndarray:
    """z [N, Z] -> w [N, D], `batch_size` latents at a time."""
    return np.concatenate(
        [session.map(z[i : i + batch_size]) for i in range(0, len(z), batch_size)], axis=0
    )


def score_codes(session: ScoringSession, wp: np.ndarray, batch_size: int) -> np.ndarray:
    """wp [N, L, D] -> scores [N, S], `batch_size` codes per fused generate-and-score pass."""
    return np.concatenate(
        [session.score(wp[i : i + batch_size]) for i in range(0, len(wp), batch_size)], axis=0
    )


def score_layer_sets_on_grid(
    session: ScoringSession,
    wp: np.ndarray,
    direction: np.ndarray,
    layer_sets: np.ndarray,
    distance: float,
    batch_size: int,
    *,
    prefix_reuse: bool = True,
) -> np.ndarray:
    """Scores [n, K, S] of wp [n, L, D] moved by distance * direction [L, D] on each layer set
    [K, L] (`rescore.kernels.manipulate`'s codes), on the micro-batch grid, so the bits do not
    depend on the chunking.

    Fast path (`prefix_reuse` and a session offering it): per micro-batch, the generator prefix
    of the originals once, then every set from the first stage it moves
    (`rescore.export.prefix`). Reference: each set's codes through the whole pass."""
    reuse = offered_prefix_reuse(session) if prefix_reuse else None
    if reuse is not None:
        return score_staged(session, reuse, wp, direction, layer_sets, distance, batch_size)
    codes = manipulate(wp, direction[None], layer_sets, distance)[0]  # [K, n, L, D]
    return np.stack([score_codes(session, moved, batch_size) for moved in codes], axis=1)


def uses_prefix_reuse(session: ScoringSession, prefix_reuse: bool) -> bool:
    """Whether `score_layer_sets_on_grid` takes the fast path (its bits may differ from the
    reference path's at float rounding, so this is part of a rescore store's identity)."""
    return prefix_reuse and offered_prefix_reuse(session) is not None


def check_micro_batch(chunk_size: int, batch_size: int) -> None:
    """Refuse a chunk size that would cut the micro-batch grid (scores would depend on it)."""
    if batch_size < 1 or chunk_size % batch_size:
        raise ScoreError(
            f"--chunk-size {chunk_size} is not a multiple of --batch-size {batch_size}, so "
            f"scores would depend on the chunking; pass a chunk size that is a multiple of the "
            f"batch size (e.g. {max(batch_size, chunk_size // max(batch_size, 1) * batch_size)})"
        )


def semantic_ranges(session: ScoringSession) -> list[list[float] | None]:
    """Declared score range [lo, hi] of every semantic (None: unknown), for the store."""
    ranges = getattr(session, "semantic_ranges", None) or (None,) * len(session.semantic_names)
    return [None if r is None else [float(r[0]), float(r[1])] for r in ranges]
