"""`rescore rescore`: move fresh latents along every boundary, at all layers and at each layer,
score all semantics, and store the per-sample scores.

    for each pending chunk of fresh latents (stream RESCORE: disjoint from the fitting samples):
        wp        = truncate(mapping(z))
        original  = score(wp)                                once per latent, shared by boundaries
        for each boundary m:
            codes = wp + distance * direction_m on layer set k, for k in {all, 0, ..., L-1}
            manipulated[:, m] = score(codes)                 every semantic, not only m's own
        write z, w, original, manipulated; mark the chunk complete

Delta statistics are computed from the stored per-sample scores (`rescore.engine.stats`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rescore.export.session import ScoringSession
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate

from .boundary import Boundary
from .latents import Stream, latent_block
from .scoring import map_latents, score_codes
from .spec import ModelSpec
from .store import ArraySpec, ChunkedStore

RESCORE_KIND = "rescore.rescore"


@dataclass(frozen=True)
class RescoreConfig:
    """How many fresh latents, from which seed, how far to move them, in which units."""

    num_latents: int = 2000
    seed: int = 0
    distance: float = 2.0
    chunk_size: int = 256
    batch_size: int = 32


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
) -> ChunkedStore:
    """Create (or resume) the rescore store at `path` and fill every pending chunk."""
    geometry = session.geometry
    num_layers, semantics = geometry.num_layers, list(session.semantic_names)
    directions = np.stack([b.directions(geometry) for b in boundaries])  # [M, L, D]
    layer_sets = layer_sets_all_and_each(num_layers)  # [K, L]
    n, m, k, s = config.num_latents, len(boundaries), len(layer_sets), len(semantics)
    identity = {
        **spec.identity(),
        "seed": config.seed,
        "stream": Stream.RESCORE.name.lower(),
        "num_latents": n,
        "chunk_size": config.chunk_size,
        "distance": config.distance,
        "boundaries": [
            {"name": b.name, "space": b.space,
             "sha256": hashlib.sha256(np.ascontiguousarray(b.normal).tobytes()).hexdigest()}
            for b in boundaries
        ],
        "semantic_names": semantics,
        "backend": session.info.backend,
        "precision": session.info.precision,
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
            ArraySpec("manipulated", (n, m, k, s), ("sample", "boundary", "layer", "semantic"),
                      inner_chunks=(1, k, s)),
        ],
        static={"directions": (directions, ("boundary", "layer", "dim"))},
        attrs={
            "boundary_names": [b.name for b in boundaries],
            "semantic_names": semantics,
            "layer_labels": layer_labels(num_layers),
            "sources": spec.sources(),
            "session": {"backend": session.info.backend, "precision": session.info.precision,
                        "device": session.info.device},
        },
    )
    pending = store.pending_chunks()
    images = sum(np.subtract(*store.chunk_range(c)[::-1]) for c in pending) * (1 + m * k)
    with tqdm(total=int(images), unit="img", desc="rescore", disable=not progress) as bar:
        for index in pending:
            start, stop = store.chunk_range(index)
            count = stop - start
            z = latent_block(config.seed, Stream.RESCORE, start, stop, geometry.z_dim)  # [n, Z]
            w = map_latents(session, z, config.batch_size)  # [n, D]
            wp = geometry.truncate(w)  # [n, L, D]
            original = score_codes(session, wp, config.batch_size)  # [n, S]
            bar.update(count)
            manipulated = np.empty((count, m, k, s), dtype=np.float32)
            for b in range(m):
                codes = manipulate(wp, directions[b : b + 1], layer_sets, config.distance)[0]
                flat = codes.reshape(k * count, num_layers, geometry.w_dim)  # [K*n, L, D]
                scores = score_codes(session, flat, config.batch_size).reshape(k, count, s)
                manipulated[:, b] = scores.transpose(1, 0, 2)  # [n, K, S]
                bar.update(k * count)
            store.write_chunk(
                index, {"z": z, "w": w, "original": original, "manipulated": manipulated}
            )
    return store


def open_rescore(path: Path) -> ChunkedStore:
    """Open a finished rescore store for reading."""
    store = ChunkedStore.open(path, kind=RESCORE_KIND, mode="r")
    store.require_complete("computing statistics")
    return store
