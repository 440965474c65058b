"""`rescore rescore`: move fresh latents along every boundary, at all layers and at each layer,
score all semantics, and store the per-sample scores.

    for each pending chunk of fresh latents (stream RESCORE: disjoint from the fitting samples):
        wp        = truncate(mapping(z))
        original  = score(wp)                                once per latent, shared by boundaries
        for each boundary m:
            codes = wp + distance * direction_m on layer set k, for k in {all, 0, ..., L-1}
            manipulated[:, m] = score(codes)                 every semantic, not only m's own
        write z, w, original, manipulated; mark the chunk complete

Every score is computed on the micro-batch grid of `scoring` (batch b = samples [b*B, (b+1)*B) of
one layer set), so a store is bit-identical whatever the chunk size, resume or worker count.

With a CI target (adaptive K) each boundary follows a time-uniform confidence sequence of every
targeted Delta (`intervals.ConfidenceSequence`), evaluated after every latent: the boundary stops
at the first latent where every targeted half-width is at or below the target (chunks stay the
unit of storage: rows of that chunk after the stop are inactive and NaN). The exact stop K and
the interval the rule saw are recorded in `finished`. `active[i, m]` records whether boundary m
was moved on latent i. Delta statistics come from the stored per-sample scores (`stats`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rescore.export.backends import BackendSpec
from rescore.export.session import ScoringSession
from rescore.kernels.manipulate import layer_sets_all_and_each

from .boundary import Boundary, check_family
from .elimination import EliminationSpec, interest_columns
from .errors import ScoreError
from .executor import LOCAL, ExecutorSpec, local_in_order, ray_in_order
from .fit import resolve_semantics
from .intervals import MIN_NONZERO, ConfidenceSequence, SequencePrefix
from .latents import Stream, latent_block
from .overlap import InOrderWriter, StoppableSession, resolve_overlap
from .readers import RESCORE_KIND, open_rescore  # noqa: F401  (open_rescore: re-exported)
from .scoring import (
    check_micro_batch,
    map_latents,
    score_codes,
    score_layer_sets_on_grid,
    semantic_ranges,
    session_identity,
    session_record,
    uses_prefix_reuse,
)
from .spec import ModelSpec
from .stats import CI_METHODS, GainAccumulator, accumulate, eliminator_for, gains
from .store import ArraySpec, ChunkedStore
from .zspace import moved_z_codes


@dataclass(frozen=True, eq=False)
class RescoreRun:
    """A finished rescore store and the per-boundary gain statistics gathered while writing it."""

    store: ChunkedStore
    accumulators: list[GainAccumulator]
    sequences: list[ConfidenceSequence] | None = None  # adaptive K: what the stopping rule saw


@dataclass(frozen=True)
class CiTarget:
    """Adaptive K: stop moving a boundary at the first latent where the targeted Deltas' 95%
    confidence-sequence half-width is <= this."""

    half_width: float
    semantics: tuple[str, ...] = ()  # empty: every semantic (every reported Delta)


@dataclass(frozen=True)
class RescoreConfig:
    """How many fresh latents (the maximum K with a target), from which seed, how far to move
    them, in which units (chunk: storage; batch: the micro-batch grid that shapes the bits), and
    which CI the report uses (recorded in `finished`, so `rescore report` keeps it)."""

    num_latents: int = 2000
    seed: int = 0
    distance: float = 2.0
    chunk_size: int = 256
    batch_size: int = 32
    target: CiTarget | None = None
    ci_method: str = "auto"
    resamples: int = 2000
    force_family: bool = False  # use boundaries fitted on another generator family
    eliminate: EliminationSpec | None = None  # successive elimination of layers (`elimination`)
    prefix_reuse: bool = True  # layer sets branch from the generator prefix they leave alone


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
    executor: ExecutorSpec = LOCAL,
    backend: BackendSpec | None = None,
    progress: bool = True,
) -> RescoreRun:
    """Create (or resume) the rescore store at `path` and fill every pending chunk.

    With a Ray `executor` the chunks are scored by Ray actors (built from `spec` and `backend`)
    while this process applies the stopping rule in chunk order and writes: the store is the same
    as a local run's, adaptive K included."""
    geometry = session.geometry
    num_layers, semantics = geometry.num_layers, list(session.semantic_names)
    check_family(boundaries, geometry.family, alias=spec.generator.name, force=config.force_family)
    directions = np.stack([b.directions(geometry) for b in boundaries])  # [M, L, D]
    layer_sets = layer_sets_all_and_each(num_layers)  # [K, L]
    # Z boundaries, and generators without layer-wise codes (PGGAN), score the all-layers set only
    scored_sets = np.array(
        [
            [(b.layer_wise and geometry.layer_wise) or j == 0 for j in range(len(layer_sets))]
            for b in boundaries
        ]
    )
    n, m, k, s = config.num_latents, len(boundaries), len(layer_sets), len(semantics)
    targeted = _targeted_semantics(config.target, semantics)
    check_micro_batch(config.chunk_size, config.batch_size)
    if config.ci_method not in CI_METHODS:
        raise ScoreError(f"unknown --ci '{config.ci_method}'; use {', '.join(CI_METHODS)}")
    if config.target is not None and config.ci_method != "auto":
        raise ScoreError(
            f"--ci {config.ci_method} cannot be combined with --target-ci (adaptive K reports "
            f"the confidence sequences its stopping rule saw); drop --ci or use --ci auto"
        )
    _check_elimination(config, [b.name for b in boundaries], semantics)
    identity = {
        **spec.identity(),
        "seed": config.seed,
        "stream": Stream.RESCORE.name.lower(),
        "num_latents": n,
        "chunk_size": config.chunk_size,
        "micro_batch": config.batch_size,
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
        **({"eliminate": asdict(config.eliminate)} if config.eliminate else {}),
        **session_identity(session),
        "prefix_reuse": uses_prefix_reuse(session, config.prefix_reuse),
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
            *(
                [ArraySpec("moved", (n, m, k), ("sample", "boundary", "layer"), dtype="uint8")]
                if config.eliminate
                else []
            ),
        ],
        static={"directions": (directions, ("boundary", "layer", "dim"))},
        attrs={
            "boundary_names": [b.name for b in boundaries],
            "boundary_spaces": [b.space for b in boundaries],  # 'z': all-layers row only
            "boundary_manipulate_layers": [b.manipulate_layers for b in boundaries],
            "layer_wise": geometry.layer_wise,  # False: every boundary is re-scored at 'all' only
            "semantic_names": semantics,
            "layer_labels": layer_labels(num_layers),
            "semantic_ranges": semantic_ranges(session),
            "sources": spec.sources(),
            "session": session_record(session),
        },
    )
    # one pass over the completed chunks resumes the statistics and the elimination's decisions
    eliminator = eliminator_for(store) if config.eliminate else None
    replay = None if eliminator is None else (lambda g, a: eliminator.replay([(g, a)]))
    accumulators, sequences = accumulate(store, replay)
    if eliminator is not None:
        sequences = None  # elimination keeps its own sequences (`Eliminator`)
    active = np.array(
        [
            not _met(q, config.target, targeted, scored_sets[b])
            for b, q in enumerate(sequences or accumulators)
        ]
    )
    if eliminator is not None:
        active &= eliminator.active
    plan = ChunkPlan(boundaries, directions, layer_sets, config)
    pending = store.pending_chunks()
    images = sum(np.subtract(*store.chunk_range(c)[::-1]) for c in pending) * (
        1 + scored_sets.sum()
    )

    def moving() -> np.ndarray:  # [M, K]: the (boundary, layer set) pairs still moved
        sets = scored_sets if eliminator is None else scored_sets & eliminator.moving()
        return active[:, None] & sets

    depth = 0  # overlap stages (`overlap`): the local executor's; Ray actors score apart already
    if executor.kind == "local":
        depth = resolve_overlap(executor.overlap, session.info.device)  # 0: no threads
        # adaptive K and elimination: a chunk's mask follows from the previous chunks' results,
        # so it is dispatched only when its turn comes (only the writer overlaps)
        ahead = depth if config.target is None and eliminator is None else 0
        stop = threading.Event()  # a chunk scored ahead ends within one call when the run stops
        ahead_session = StoppableSession(session, stop) if ahead else session
        results = local_in_order(
            lambda c, mask: plan.score(ahead_session, c, mask),
            pending,
            moving,
            ahead=ahead,
            stop=stop,
        )
    else:
        if backend is None:
            raise ScoreError("a Ray rescore needs the backend its workers open; pass backend=")
        store.set_session({**session_record(session), **executor.record()})
        results = ray_in_order(executor, RescoreWorker(spec, backend, plan), pending, moving)
    with (
        closing(results),
        InOrderWriter(store.write_chunk, depth, "rescore-writer") as writer,
        tqdm(total=int(images), unit="img", desc="rescore", disable=not progress) as bar,
    ):
        for index, mask, (z, w, original, manipulated) in results:
            count = len(z)
            if not manipulated.flags.writeable:  # Ray hands out read-only views of its store
                manipulated = manipulated.copy()
            manipulated[:, mask & ~moving()] = np.nan  # stopped after this chunk was dispatched
            moved = np.zeros((count, m), np.uint8)
            moved_sets = np.zeros((count, m, k), np.uint8)
            bar.update(count * (1 + int((mask & moving()).sum())))
            for b in np.flatnonzero(active):
                boundary_gains = gains(original, manipulated[:, b : b + 1])[:, 0]  # [n, K, S]
                rows = count
                kept = None
                if eliminator is not None:
                    rows, kept = eliminator.update(b, boundary_gains)
                    kept &= scored_sets[b]
                    active[b] = eliminator.active[b]
                    manipulated[:rows, b][~kept] = np.nan
                    moved_sets[:rows, b] = kept
                elif sequences is not None:
                    prefix = sequences[b].extend(boundary_gains)
                    if config.target is not None:
                        rows, met = _first_met(
                            prefix, sequences[b], config.target, targeted, scored_sets[b]
                        )
                        active[b] = not met
                    sequences[b].commit(prefix, rows)
                manipulated[rows:, b] = np.nan
                moved[:rows, b] = 1
                accumulators[b].add(boundary_gains[:rows], kept)
            values = {"z": z, "w": w, "original": original, "manipulated": manipulated}
            values.update(active=moved, **({"moved": moved_sets} if eliminator else {}))
            writer.submit(index, values)
    info = _finish_info(boundaries, accumulators, sequences, active, config, targeted)
    if eliminator is not None:
        labels = layer_labels(num_layers)
        info["elimination"] = eliminator.record([b.name for b in boundaries], semantics, labels)
    store.finish(info)
    return RescoreRun(store, accumulators, sequences)


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """What scoring one chunk of fresh latents needs (picklable: Ray workers receive it)."""

    boundaries: list[Boundary]
    directions: np.ndarray  # [M, L, D]
    layer_sets: np.ndarray  # [K, L] bool
    config: RescoreConfig

    def score(
        self, session: ScoringSession, index: int, moving: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Chunk `index`: z [n, Z], w [n, D], original [n, S] and manipulated [n, M, K, S] for the
        (boundary, layer set) pairs `moving` [M, K] marks (NaN elsewhere). Pure in (index,
        moving): any worker gives the same bits."""
        config, geometry = self.config, session.geometry
        start = index * config.chunk_size
        stop = min(start + config.chunk_size, config.num_latents)
        z = latent_block(config.seed, Stream.RESCORE, start, stop, geometry.z_dim)  # [n, Z]
        w = map_latents(session, z, config.batch_size)  # [n, D]
        wp = geometry.truncate(w)  # [n, L, D]
        original = score_codes(session, wp, config.batch_size)  # [n, S]
        moving = np.asarray(moving, bool).reshape(len(self.boundaries), len(self.layer_sets))
        shape = (stop - start, len(self.boundaries), len(self.layer_sets), original.shape[1])
        manipulated = np.full(shape, np.nan, dtype=np.float32)
        for b in np.flatnonzero(moving.any(axis=1)):
            if not self.boundaries[b].layer_wise:  # Z: move z, map, truncate; per-layer rows NaN
                z_moved = moved_z_codes(
                    session, z, self.boundaries[b].normal, config.distance, config.batch_size
                )
                manipulated[:, b, 0] = score_codes(session, z_moved, config.batch_size)
                continue
            sets = np.flatnonzero(moving[b])
            manipulated[:, b, sets] = score_layer_sets_on_grid(
                session,
                wp,
                self.directions[b],
                self.layer_sets[sets],
                config.distance,
                config.batch_size,
                prefix_reuse=config.prefix_reuse,
            )
        return z, w, original, manipulated


@dataclass(frozen=True, eq=False)
class RescoreWorker:
    """A picklable recipe for a Ray worker: builds the models and session once, then scores
    chunks with `ChunkPlan.score`."""

    spec: ModelSpec
    backend: BackendSpec
    plan: ChunkPlan

    def __call__(self) -> Callable[[int, np.ndarray], tuple]:
        from .spec import open_model_session

        session = open_model_session(self.spec, self.backend).__enter__()
        return lambda index, active: self.plan.score(session, index, active)


def _check_elimination(config: RescoreConfig, names: list[str], semantics: list[str]) -> None:
    """Elimination answers "which layer peaks", adaptive K "how precise is every Delta": one
    rule per run (a CI target over cells that stopped early would never be met)."""
    if config.eliminate is None:
        return
    interest_columns(names, semantics, config.eliminate)  # unknown semantics, bad tie
    if config.target is not None:
        raise ScoreError(
            "--eliminate cannot be combined with --target-ci (elimination stops layers early, so "
            "their Deltas never reach a common CI target); drop one of them"
        )
    if config.ci_method == "bootstrap":
        raise ScoreError(
            "--ci bootstrap cannot be combined with --eliminate (its layer sets have unequal K); "
            "use --ci auto or normal"
        )


def _targeted_semantics(target: CiTarget | None, semantics: list[str]) -> np.ndarray:
    """Column indices the CI target applies to (all when none are named)."""
    if target is None:
        return np.arange(len(semantics))
    if target.half_width <= 0:
        raise ScoreError(f"--target-ci must be positive, got {target.half_width}")
    return np.array([semantics.index(n) for n in resolve_semantics(target.semantics, semantics)])


def _half_widths(sequence: ConfidenceSequence, columns: np.ndarray) -> np.ndarray:
    low, high = sequence.interval()
    return (high - low)[:, columns] / 2.0


def _met(
    tracker: ConfidenceSequence | GainAccumulator,
    target: CiTarget | None,
    columns: np.ndarray,
    scored: np.ndarray,
) -> bool:
    """Whether a boundary's target is met after the latents its sequence has seen."""
    if target is None or not isinstance(tracker, ConfidenceSequence) or tracker.count < 2:
        return False
    low, high = tracker.interval()
    nonzero = tracker.state.nonzero
    rows = _met_rows(low[None], high[None], nonzero[None], tracker, target, columns, scored)
    return bool(rows[0])


def _met_rows(low, high, nonzero, sequence, target, columns, scored) -> np.ndarray:
    """[n] bool: the target is met after each latent. A zero-width interval is never met (it
    means no spread was seen yet), nor a normal one with fewer than MIN_NONZERO non-zero gains.
    Layer sets that are not scored (`scored` [K] False: Z boundaries' per-layer rows) are
    ignored."""
    low, high, nonzero = low[..., columns], high[..., columns], nonzero[..., columns]
    half = (high - low) / 2.0
    trusted = sequence.bounded[columns] | (nonzero >= MIN_NONZERO)
    ok = np.isfinite(half) & (high > low) & (half <= target.half_width) & trusted
    ok |= ~np.asarray(scored, bool).reshape(1, -1, 1)  # [n, K, S']
    return ok.reshape(len(ok), -1).all(axis=1)


def _first_met(
    prefix: SequencePrefix,
    sequence: ConfidenceSequence,
    target: CiTarget,
    columns: np.ndarray,
    scored: np.ndarray,
) -> tuple[int, bool]:
    """How many latents of the chunk the boundary keeps, and whether it stops: up to and
    including the first latent where the target is met (all of them if it is not met)."""
    met = _met_rows(prefix.low, prefix.high, prefix.nonzero, sequence, target, columns, scored)
    met &= sequence.count + np.arange(1, len(met) + 1) >= 2
    return (int(np.argmax(met)) + 1, True) if met.any() else (len(met), False)


def _finish_info(boundaries, accumulators, sequences, active, config, columns) -> dict:
    counts = {b.name: int(a.count) for b, a in zip(boundaries, accumulators, strict=True)}
    ci = {"method": config.ci_method, "confidence": 0.95}
    if config.ci_method == "bootstrap":
        ci.update(resamples=config.resamples, seed=config.seed)
    target = config.target
    if target is None:
        return {"reason": "complete", "k": counts, "ci": ci}
    ci["method"] = "auto"
    seen = {
        b.name: float(np.nanmax(_half_widths(q, columns)))
        for b, q in zip(boundaries, sequences, strict=True)
    }
    unmet = {b.name: seen[b.name] for b, still in zip(boundaries, active, strict=True) if still}
    return {
        "reason": "max_k" if unmet else "target_met",
        "k": counts,
        "ci": {**ci, "sequence": "confidence_sequence", "horizon": config.num_latents},
        "target_half_width": target.half_width,
        "stop_half_width": seen,
        "unmet_max_half_width": unmet,
    }
