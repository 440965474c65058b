"""Directions without labels: SeFa (closed-form factorization) and GANSpace (PCA of codes).

    sefa:  A = [W_l / ||rows||  for l in layers]   stacked weights that read the layer codes
           directions = eigenvectors of A^T A (top k by eigenvalue)     (Shen & Zhou, CVPR 2021)
    pca:   directions = principal components of w (or of the flattened W+ codes) of a samples
           store, with their explained variance                          (Harkonen et al. 2020)

SeFa follows genforce/sefa's `factorize_weight` exactly: each layer's weight is transposed to
[D, out_l], the layers are concatenated along out, every column (one output unit's weight row) is
scaled to unit norm, and the eigenvectors of A^T A [D, D] are the directions. Here it runs in
float64 with `eigh` (the reference: float32 and `eig`), sorted by descending eigenvalue.

PCA streams the store chunk by chunk into a float64 mean and scatter matrix (Chan's parallel
update), then takes `eigh` of the covariance: exact (the same as PCA of all codes at once, for any
chunking), one pass, and memory O(dims^2) whatever N is (D = 512: 2 MB; W+ of a 256 px StyleGAN,
14 x 512: 0.4 GB). An incremental or randomized PCA would need several passes or give approximate
components for no memory gain at these sizes.

Both write boundary files (`engine.boundary`): DIR/directions/<method>/<method>_<i>.npy + .json.
Every direction's sign is fixed so its largest-magnitude component is positive (reproducible).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.models.registry import GeneratorOptions, ModelRef

from .boundary import Boundary, save_boundary
from .errors import ScoreError
from .grid import parse_layers
from .layout import RunDirectory
from .spec import ModelSpec
from .store import ChunkedStore

_PER_RANK = ("explained_variance_ratio", "layer_norms")  # metadata lists with one entry per rank


@dataclass(frozen=True, eq=False)
class Directions:
    """Unit directions [k, ...] with their eigenvalues (SeFa) or explained variance (PCA)."""

    method: str
    vectors: np.ndarray = field(repr=False)  # [k, D] or [k, L, D]
    values: np.ndarray = field(repr=False)  # [k]
    metadata: dict[str, Any] = field(default_factory=dict)

    def boundaries(self) -> list[Boundary]:
        """One boundary per direction, named `<method>_<rank>` (HiGAN layout, unit norm)."""
        value_key = "eigenvalue" if self.method == "sefa" else "explained_variance"
        out = []
        for rank, (vector, value) in enumerate(zip(self.vectors, self.values, strict=True)):
            meta = {"method": self.method, "rank": rank, value_key: float(value)}
            extra = {k: v[rank] if k in _PER_RANK else v for k, v in self.metadata.items()}
            out.append(Boundary(f"{self.method}_{rank}", vector[None], {**meta, **extra}))
        return out


def layer_code_weights(generator: Any) -> list[np.ndarray]:
    """The generator's weights [out_l, D] per layer code, as float64 host arrays (for SeFa)."""
    method = getattr(generator, "layer_code_weights", None)
    if method is None:
        raise ScoreError(
            f"generator {type(generator).__name__} has no layer_code_weights(); SeFa needs the "
            f"weights that read each layer code (see rescore.models.base)"
        )
    return [w.detach().double().cpu().numpy() for w in method()]


def factorize(
    weights: Sequence[np.ndarray], layers: Sequence[int], num: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SeFa on the chosen layers' weights [out_l, D]: (eigenvalues [k], eigenvectors [k, D]).

    Eigenvalues descending; each eigenvector unit norm with its largest component positive.
    """
    stacked = np.concatenate([np.asarray(weights[i], np.float64).T for i in layers], axis=1)
    norms = np.linalg.norm(stacked, axis=0, keepdims=True)  # [1, sum out_l]
    if np.any(norms == 0):
        raise ScoreError(
            f"a weight row of layers {list(layers)} is all zeros, which SeFa cannot normalise; "
            f"choose other --layers"
        )
    unit = stacked / norms  # [D, sum out_l]
    values, vectors = np.linalg.eigh(unit @ unit.T)  # ascending, columns
    order = np.argsort(values)[::-1][: num or len(values)]
    return values[order], _fix_signs(vectors[:, order].T)


def sefa_directions(
    generator: Any, layers_text: str = "all", num: int = 10, info: dict | None = None
) -> Directions:
    """SeFa directions of `generator` for the layers `layers_text` ('all', '3', '0-4', ...)."""
    _check_num(num)
    weights = layer_code_weights(generator)
    layers = [int(i) for i in np.flatnonzero(parse_layers(layers_text, len(weights)))]
    values, vectors = factorize(weights, layers, num)
    meta = {"space": "w", "layers": layers, **(info or {})}
    return Directions("sefa", vectors.astype(np.float32), values, meta)


def pca_directions(
    store: ChunkedStore, space: str = "w", num: int = 10, info: dict | None = None
) -> Directions:
    """Principal components of `w` [N, D] or `wp` [N, L, D] (flattened) of a samples store."""
    _check_num(num)
    if space not in ("w", "wp"):
        raise ScoreError(f"unknown --space '{space}'; use w or wp")
    if space == "wp" and not store.has("wp"):
        raise ScoreError(f"{store.path} holds no wp codes; sample with --wplus or use --space w")
    array = store.array(space)
    shape = tuple(array.shape[1:])
    moments = _Moments(int(np.prod(shape)))
    for index in np.flatnonzero(store.completed()):
        start, stop = store.chunk_range(int(index))
        moments.add(np.asarray(array[start:stop], np.float64).reshape(stop - start, -1))
    if moments.count < 2:
        raise ScoreError(f"{store.path} holds fewer than 2 samples; sample more latents first")
    covariance = moments.scatter / (moments.count - 1)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:num]
    values, vectors = np.maximum(values[order], 0.0), _fix_signs(vectors[:, order].T)
    ratio = values / max(float(np.trace(covariance)), np.finfo(float).tiny)
    vectors = vectors.reshape(len(order), *shape)
    meta: dict[str, Any] = {"space": space, "explained_variance_ratio": ratio.tolist()}
    if space == "wp":
        layer_norms = np.linalg.norm(vectors, axis=-1)  # [k, L]: the format wants unit layers
        vectors = vectors / np.maximum(layer_norms[..., None], np.finfo(float).tiny)
        meta["layer_norms"] = layer_norms.tolist()
    meta["num_samples"] = moments.count
    return Directions("pca", vectors.astype(np.float32), values, {**meta, **(info or {})})


def write_directions(directions: Directions, root: Path) -> list[Path]:
    """Write DIR/directions/<method>/<method>_<i>.npy + .json; returns the .npy paths."""
    target = directions_dir(root, directions.method)
    return [save_boundary(target, b) for b in directions.boundaries()]


def directions_dir(root: Path, method: str) -> Path:
    """DIR/directions/<method>/."""
    return Path(root) / "directions" / method


class _Moments:
    """Running float64 mean [F] and scatter [F, F] of rows, merged chunk by chunk."""

    def __init__(self, dims: int) -> None:
        self.count = 0
        self.mean = np.zeros(dims)
        self.scatter = np.zeros((dims, dims))

    def add(self, rows: np.ndarray) -> None:
        n = len(rows)
        if n == 0:
            return
        chunk_mean = rows.mean(axis=0)
        centred = rows - chunk_mean
        total = self.count + n
        delta = chunk_mean - self.mean
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total


def _check_num(num: int) -> None:
    if num < 1:
        raise ScoreError(f"--num must be at least 1, got {num}")


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each row [k, F] so that its largest-magnitude component is positive."""
    peaks = vectors[np.arange(len(vectors)), np.argmax(np.abs(vectors), axis=1)]
    return vectors * np.where(peaks < 0, -1.0, 1.0)[:, None]


def sefa_step(
    root: Path, generator: ModelRef | None, options: GeneratorOptions, layers: str, num: int
) -> list[Path]:
    """`rescore directions sefa`: the generator given, or the one DIR/samples.zarr records."""
    from rescore.models.registry import build_generator

    if generator is None:
        spec = _recorded_spec(root)
        generator, options = spec.generator, spec.options
    model = build_generator(generator, options)
    info = {"family": getattr(model, "family", generator.name), **_generator_record(generator)}
    return write_directions(sefa_directions(model, layers, num, info), root)


def pca_step(root: Path, space: str, num: int) -> list[Path]:
    """`rescore directions pca`: components of the codes in DIR/samples.zarr."""
    from .sample import open_samples

    store = open_samples(RunDirectory(root).samples)
    spec = ModelSpec.from_sources(store.meta["sources"])
    info = {
        "family": spec.generator.name,
        "generator": store.meta["identity"]["generator"],
        "store": str(store.path),
    }
    return write_directions(pca_directions(store, space, num, info), root)


def _recorded_spec(root: Path) -> ModelSpec:
    from .sample import open_samples

    samples = RunDirectory(root).samples
    if not samples.exists():
        raise ScoreError(
            f"{samples} does not exist; pass --generator NAME[=CHECKPOINT] or sample first"
        )
    return ModelSpec.from_sources(open_samples(samples).meta["sources"])


def _generator_record(ref: ModelRef) -> dict[str, Any]:
    return {"generator": {"name": ref.name, "sha256": ref.digest()}}
