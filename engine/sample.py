"""`rescore sample`: stream N latents through generator + predictors into a Zarr store.

    for each pending chunk of latent indices:
        z  = latent_block(seed, SAMPLE, start, stop)      deterministic in (seed, index)
        w  = mapping(z);  wp = truncate(w)
        scores = predictors(generator(wp))                 fused, images never leave the device
        write z, w, (wp), scores; then mark the chunk complete in the ledger

Memory is bounded by one chunk; a rerun resumes after the completed chunks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rescore.export.backends import BackendSpec
from rescore.export.session import ScoringSession

from .errors import ScoreError
from .latents import Stream, latent_block
from .overlap import InOrderWriter, Prefetch, StoppableSession, resolve_overlap
from .readers import SAMPLES_KIND, open_samples  # noqa: F401  (open_samples: re-exported)
from .scoring import map_latents, score_codes, session_identity, session_record
from .spec import ModelSpec, open_model_session
from .store import ArraySpec, ChunkedStore


@dataclass(frozen=True)
class SampleConfig:
    """How many latents, from which seed, in which units, and which codes to keep."""

    num_samples: int = 10_000
    seed: int = 0
    chunk_size: int = 1024
    batch_size: int = 32
    save_wp: bool = False  # also store the truncated layer-wise codes wp [N, L, D] (W+)


def sample_and_score(
    session: ScoringSession,
    spec: ModelSpec,
    path: Path,
    config: SampleConfig,
    *,
    chunks: Sequence[int] | None = None,
    overlap: bool | None = None,
    progress: bool = True,
) -> ChunkedStore:
    """Create (or resume) the samples store at `path` and fill its pending chunks here.

    `overlap`: prepare, score and write chunks in overlapping stages (None: the device's
    default, `rescore.engine.overlap.overlap_default`); the store is the same either way.

    `chunks` restricts the work to some chunk indices (a worker's share when a scheduler splits a
    run); the values of a chunk do not depend on which worker computes it, or when.
    """
    store = create_samples_store(session, spec, path, config)
    pending = [c for c in store.pending_chunks() if chunks is None or c in set(chunks)]
    todo = sum(np.subtract(*store.chunk_range(c)[::-1]) for c in pending)
    depth = resolve_overlap(overlap, session.info.device)
    with tqdm(total=int(todo), unit="img", desc="sample", disable=not progress) as bar:
        sample_chunks(session, store, config, pending, depth=depth, done=bar.update)
    return store


def sample_chunks(
    session: ScoringSession,
    store: ChunkedStore,
    config: SampleConfig,
    pending: Sequence[int],
    *,
    depth: int = 0,
    done: Callable[[int], object] = lambda rows: None,
) -> None:
    """Fill the `pending` chunks in order, calling `done(rows)` as each is scored.

    With `depth` >= 1 (`rescore.engine.overlap`) chunk c+1's codes (latents, mapping,
    truncation) are prepared in one thread and chunk c-1 written in another while chunk c is
    scored; depth 0 does the same calls one after the other. The store is the same bits."""
    stop = threading.Event()
    ahead = StoppableSession(session, stop) if depth else session
    prepared = ((c, sample_codes(ahead, store, config, c)) for c in pending)
    with (
        Prefetch(prepared, depth, "sample-codes", stop) as codes,
        InOrderWriter(store.write_chunk, depth, "sample-writer") as writer,
    ):
        for index, chunk_codes in codes:
            writer.submit(index, score_sample_codes(session, config, index, chunk_codes))
            done(len(chunk_codes[0]))


def create_samples_store(
    session: ScoringSession,
    spec: ModelSpec,
    path: Path,
    config: SampleConfig,
    *,
    session_attrs: dict | None = None,
) -> ChunkedStore:
    """Create the pre-sized samples store at `path`, or reopen it if the identity matches."""
    geometry = session.geometry
    n, chunk = config.num_samples, config.chunk_size
    arrays = [
        ArraySpec("z", (n, geometry.z_dim), ("sample", "z_dim")),
        ArraySpec("w", (n, geometry.w_dim), ("sample", "dim")),
        ArraySpec("scores", (n, len(session.semantic_names)), ("sample", "semantic")),
    ]
    if config.save_wp:
        arrays.append(
            ArraySpec("wp", (n, geometry.num_layers, geometry.w_dim), ("sample", "layer", "dim"))
        )
    identity = {
        **spec.identity(),
        "seed": config.seed,
        "stream": Stream.SAMPLE.name.lower(),
        "num_samples": n,
        "chunk_size": chunk,
        "save_wp": config.save_wp,
        **session_identity(session),
    }
    return ChunkedStore.create_or_resume(
        path,
        kind=SAMPLES_KIND,
        identity=identity,
        num_samples=n,
        chunk_size=chunk,
        arrays=arrays,
        static={
            "w_avg": (geometry.w_avg, ("dim",)),
            "truncation": (geometry.truncation, ("layer",)),
        },
        attrs={
            "semantic_names": list(session.semantic_names),
            "sources": spec.sources(),
            "session": {**session_record(session), **(session_attrs or {})},
        },
    )


def sample_chunk(
    session: ScoringSession, store: ChunkedStore, config: SampleConfig, index: int
) -> int:
    """Compute one chunk (z -> w -> wp -> scores), write it whole, mark it; return its rows."""
    codes = sample_codes(session, store, config, index)
    store.write_chunk(index, score_sample_codes(session, config, index, codes))
    return len(codes[0])


def sample_codes(
    session: ScoringSession, store: ChunkedStore, config: SampleConfig, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk `index`'s codes: z [n, Z], w [n, D] and the truncated wp [n, L, D]."""
    geometry = session.geometry
    start, stop = store.chunk_range(index)
    z = latent_block(config.seed, Stream.SAMPLE, start, stop, geometry.z_dim)  # [n, Z]
    w = map_latents(session, z, config.batch_size)  # [n, D]
    return z, w, geometry.truncate(w)  # wp [n, L, D]


def score_sample_codes(
    session: ScoringSession,
    config: SampleConfig,
    index: int,
    codes: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """The arrays of chunk `index` (z, w, scores [n, S], and wp if kept), its codes scored."""
    z, w, wp = codes
    scores = score_codes(session, wp, config.batch_size)  # [n, S]
    check_score_columns(scores, session.semantic_names, index)
    values = {"z": z, "w": w, "scores": scores}
    if config.save_wp:
        values["wp"] = wp
    return values


@dataclass(frozen=True)
class SampleWorker:
    """A picklable recipe for a worker that fills chunks of one samples store (Ray actors build
    it once each: models, scoring session, the opened store)."""

    spec: ModelSpec
    backend: BackendSpec
    config: SampleConfig
    path: Path

    def __call__(self) -> Callable[[Sequence[int]], int]:
        session = open_model_session(self.spec, self.backend).__enter__()
        store = create_samples_store(session, self.spec, self.path, self.config)  # identity check

        def work(chunks: Sequence[int]) -> int:
            return sum(sample_chunk(session, store, self.config, c) for c in chunks)

        return work


def check_score_columns(scores: np.ndarray, names: Sequence[str], chunk: int) -> None:
    """Refuse a chunk in which a semantic's scores are all NaN/inf: the predictor is broken for
    it, and writing the chunk would only defer the failure to `fit`. (Scattered NaNs are kept:
    `fit` counts and reports them.)"""
    broken = ~np.isfinite(scores).any(axis=0)  # [S]
    if scores.shape[0] and broken.any():
        bad = [names[i] for i in np.flatnonzero(broken)]
        raise ScoreError(
            f"the predictor returned only NaN/inf for semantic(s) {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''} on all {scores.shape[0]} images of chunk {chunk}; "
            f"fix the predictor (nothing was written for this chunk)"
        )
