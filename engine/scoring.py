"""Batching helpers between the engine's chunks and a session's batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from rescore.export.session import ScoringSession


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
