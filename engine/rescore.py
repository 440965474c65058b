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

from rescore.export.session import ScoringSession
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate

from .boundary import Boundary, check_family
from .errors import ScoreError
from .fit import resolve_semantics
from .latents import Stream, latent_block
from .readers import RESCORE_KIND, open_rescore  # noqa: F401  (open_rescore: re-exported)
from .scoring import map_latents, score_codes, session_identity, session_record
from .spec import ModelSpec
from .stats import GainAccumulator, accumulate, gains, half_widths
from .store import ArraySpec, ChunkedStore
from .zspace import moved_z_codes


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
    force_family: bool = False  # use boundaries fitted on another generator family


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
    check_family(boundaries, geometry.family, alias=spec.generator.name, force=config.force_family)
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
            "boundary_spaces": [b.space for b in boundaries],  # 'z': all-layers row only
            "boundary_manipulate_layers": [b.manipulate_layers for b in boundaries],
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
                if not boundaries[b].layer_wise:  # Z: move z, map, truncate; per-layer rows NaN
                    moved = moved_z_codes(
                        session, z, boundaries[b].normal, config.distance, config.batch_size
                    )
                    manipulated[:, b, 0] = score_codes(session, moved, config.batch_size)
                    bar.update(k * count)
                    continue
                codes = manipulate(wp, directions[b : b + 1], layer_sets, config.distance)[0]
                flat = codes.reshape(k * count, num_layers, geometry.w_dim)  # [K*n, L, D]
                scores = score_codes(session, flat, config.batch_size).reshape(k, count, s)
                manipulated[:, b] = scores.transpose(1, 0, 2)  # [n, K, S]
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
    widths = half_widths(accumulator)[:, columns]  # [K, S']
    scored = ~np.isnan(accumulator.mean[:, columns]).all(axis=1)  # Z boundaries: 'all' only
    return bool(np.all(widths[scored] <= target.half_width))


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
