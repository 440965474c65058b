"""`rescore rescore`: move fresh latents along every boundary, at all layers and at each layer,
score all semantics, and store the per-sample scores.

    for each pending chunk of fresh latents (stream RESCORE: disjoint from the fitting samples):
        wp        = truncate(mapping(z))
        original  = score(wp)                                once per latent, shared by boundaries
        for each boundary m:
            codes = wp + distance * direction_m on layer set k, for k in {all, 0, ..., L-1}
            manipulated[:, m] = score(codes)                 every semantic, not only m's own
        write z, w, original, manipulated; mark the chunk complete

With a CI target (adaptive K) a boundary stops being moved once every targeted Delta's 95% CI
half-width is at or below the target; the run ends when all boundaries stopped or the store's
K (the maximum) is used up. `active[i, m]` records whether boundary m was moved on latent i.
Delta statistics are computed from the stored per-sample scores (`rescore.engine.stats`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rescore.export.session import ScoringSession, score_layer_sets
from rescore.kernels.manipulate import layer_sets_all_and_each

from .boundary import Boundary
from .errors import ScoreError
from .fit import resolve_semantics
from .latents import Stream, latent_block
from .scoring import map_latents, score_codes, session_identity, session_record
from .spec import ModelSpec
from .stats import GainAccumulator, accumulate, gains, half_widths
from .store import ArraySpec, ChunkedStore

RESCORE_KIND = "rescore.rescore"


@dataclass(frozen=True, eq=False)
class RescoreRun:
    """A finished rescore store and the per-boundary gain statistics gathered while writing it."""

    store: ChunkedStore
    accumulators: list[GainAccumulator]


@dataclass(frozen=True)
class CiTarget:
    """Adaptive K: stop moving a boundary once the targeted Deltas' 95% CI half-width <= this."""

    half_width: float
    semantics: tuple[str, ...] = ()  # empty: every semantic (every reported Delta)


@dataclass(frozen=True)
class RescoreConfig:
    """How many fresh latents (the maximum K with a target), from which seed, how far to move
    them, in which units."""

    num_latents: int = 2000
    seed: int = 0
    distance: float = 2.0
    chunk_size: int = 256
    batch_size: int = 32
    target: CiTarget | None = None


def layer_labels(num_layers: int) -> list[str]:
    """Labels of the layer sets, in store order: 'all', then '0' ... 'L-1'."""
    return ["all", *(str(layer) for layer in range(num_layers))]


def rescore_boundaries(
    session: ScoringSession,
    spec: ModelSpec,
    boundaries: list[Boundary],
    path: Path,
    config: RescoreConfig,
    *,
    progress: bool = True,
) -> RescoreRun:
    """Create (or resume) the rescore store at `path` and fill every pending chunk."""
    geometry = session.geometry
    num_layers, semantics = geometry.num_layers, list(session.semantic_names)
    directions = np.stack([b.directions(geometry) for b in boundaries])  # [M, L, D]
    layer_sets = layer_sets_all_and_each(num_layers)  # [K, L]
    n, m, k, s = config.num_latents, len(boundaries), len(layer_sets), len(semantics)
    targeted = _targeted_semantics(config.target, semantics)
    identity = {
        **spec.identity(),
        "seed": config.seed,
        "stream": Stream.RESCORE.name.lower(),
        "num_latents": n,
        "chunk_size": config.chunk_size,
        "distance": config.distance,
        "boundaries": [
            {
                "name": b.name,
                "space": b.space,
                "sha256": hashlib.sha256(np.ascontiguousarray(b.normal).tobytes()).hexdigest(),
            }
            for b in boundaries
        ],
        "target": asdict(config.target) if config.target else None,
        **session_identity(session),
    }
    store = ChunkedStore.create_or_resume(
        path,
        kind=RESCORE_KIND,
        identity=identity,
        num_samples=n,
        chunk_size=config.chunk_size,
        arrays=[
            ArraySpec("z", (n, geometry.z_dim), ("sample", "z_dim")),
            ArraySpec("w", (n, geometry.w_dim), ("sample", "dim")),
            ArraySpec("original", (n, s), ("sample", "semantic")),
            ArraySpec(
                "manipulated",
                (n, m, k, s),
                ("sample", "boundary", "layer", "semantic"),
                inner_chunks=(1, k, s),
            ),
            ArraySpec("active", (n, m), ("sample", "boundary"), dtype="uint8"),
        ],
        static={"directions": (directions, ("boundary", "layer", "dim"))},
        attrs={
            "boundary_names": [b.name for b in boundaries],
            "semantic_names": semantics,
            "layer_labels": layer_labels(num_layers),
            "sources": spec.sources(),
            "session": session_record(session),
        },
    )
    accumulators = accumulate(store)  # resumes the statistics of completed chunks
    active = np.array([not _target_met(a, config.target, targeted) for a in accumulators])
    pending = store.pending_chunks()
    images = sum(np.subtract(*store.chunk_range(c)[::-1]) for c in pending) * (1 + m * k)
    with tqdm(total=int(images), unit="img", desc="rescore", disable=not progress) as bar:
        for index in pending:
            if not active.any():
                break
            start, stop = store.chunk_range(index)
            count = stop - start
            z = latent_block(config.seed, Stream.RESCORE, start, stop, geometry.z_dim)  # [n, Z]
            w = map_latents(session, z, config.batch_size)  # [n, D]
            wp = geometry.truncate(w)  # [n, L, D]
            original = score_codes(session, wp, config.batch_size)  # [n, S]
            bar.update(count)
            manipulated = np.full((count, m, k, s), np.nan, dtype=np.float32)
            for b in np.flatnonzero(active):
                scores = score_layer_sets(  # reuses the generator prefix where the session can
                    session,
                    wp,
                    directions[b : b + 1],
                    layer_sets,
                    config.distance,
                    config.batch_size,
                )
                manipulated[:, b] = scores[0].transpose(1, 0, 2)  # [1, K, n, S] -> [n, K, S]
                bar.update(k * count)
            store.write_chunk(
                index,
                {
                    "z": z,
                    "w": w,
                    "original": original,
                    "manipulated": manipulated,
                    "active": np.broadcast_to(active, (count, m)).astype(np.uint8),
                },
            )
            for b in np.flatnonzero(active):
                accumulators[b].add(gains(original, manipulated[:, b : b + 1])[:, 0])
                active[b] = not _target_met(accumulators[b], config.target, targeted)
    store.finish(_finish_info(store, boundaries, accumulators, active, config.target, targeted))
    return RescoreRun(store, accumulators)


def _targeted_semantics(target: CiTarget | None, semantics: list[str]) -> np.ndarray:
    """Column indices the CI target applies to (all when none are named)."""
    if target is None:
        return np.arange(len(semantics))
    if target.half_width <= 0:
        raise ScoreError(f"--target-ci must be positive, got {target.half_width}")
    return np.array([semantics.index(n) for n in resolve_semantics(target.semantics, semantics)])


def _target_met(accumulator: GainAccumulator, target: CiTarget | None, columns: np.ndarray) -> bool:
    if target is None or accumulator.count < 2:
        return False
    return bool(np.all(half_widths(accumulator)[:, columns] <= target.half_width))


def _finish_info(store, boundaries, accumulators, active, target, columns) -> dict:
    counts = {b.name: int(a.count) for b, a in zip(boundaries, accumulators, strict=True)}
    if target is None:
        return {"reason": "complete", "k": counts}
    unmet = {
        b.name: float(np.nanmax(half_widths(a)[:, columns]))
        for b, a, still in zip(boundaries, accumulators, active, strict=True)
        if still
    }
    return {
        "reason": "max_k" if unmet else "target_met",
        "k": counts,
        "target_half_width": target.half_width,
        "unmet_max_half_width": unmet,
    }


def open_rescore(path: Path) -> ChunkedStore:
    """Open a finished rescore store for reading."""
    store = ChunkedStore.open(path, kind=RESCORE_KIND, mode="r")
    store.require_complete("computing statistics")
    return store
