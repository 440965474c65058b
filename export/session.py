"""The scoring-session protocol shared by every backend, and the torch-eager reference session.

A session is the engine's only view of models: it maps z to w, reports the latent geometry
(truncation), scores layer-wise codes and, on request, renders images. Arrays cross the boundary as
NumPy on the host (codes in, scores out); images are produced and consumed on the device.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from rescore.models.base import Generator, Predictor
from rescore.models.errors import BackendUnavailableError, ShapeMismatchError
from rescore.models.fused import ScoringPass

from .geometry import LatentGeometry  # re-exported: its home is the torch-free export.geometry

if TYPE_CHECKING:
    from .prefix import PrefixReuse


@dataclass(frozen=True)
class SessionInfo:
    """Which backend, precision and device produced a set of scores (recorded in stores)."""

    backend: str
    precision: str
    device: str


class ScoringSession(Protocol):
    """What the engine needs from a backend. Sessions are context managers.

    Optional: ``prefix_reuse() -> rescore.export.prefix.PrefixReuse | None`` (generator-prefix
    reuse in layer-wise re-scoring; torch eager and ONNX Runtime offer it)."""

    info: SessionInfo
    geometry: LatentGeometry
    semantic_names: tuple[str, ...]

    def map(self, z: np.ndarray) -> np.ndarray:
        """z [B, Z] float32 -> w [B, D] float32 (mapping network, no truncation)."""
        ...

    def score(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] float32 -> scores [B, S] float32 (generate and score, fused)."""
        ...

    def render(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] -> uint8 images [B, H, W, 3] (only for pictures a user asks for)."""
        ...

    def __enter__(self) -> ScoringSession: ...

    def __exit__(self, *exc: object) -> None: ...


def score_layer_sets(
    session: ScoringSession,
    wp: np.ndarray,
    directions: np.ndarray,
    layer_sets: np.ndarray,
    distance: float,
    batch_size: int,
) -> np.ndarray:
    """Scores of every code moved along every direction on every layer set: [M, K, n, S].

    wp [n, L, D]; directions [M, L, D]; layer_sets [K, L] bool; code (m, k, i) is
    ``wp[i, l] + distance * directions[m, l]`` on the layers of set k, ``wp[i, l]`` elsewhere (as
    `rescore.kernels.manipulate` builds it). A session offering ``prefix_reuse()`` reuses the
    generator prefix on the micro-batch grid (`prefix.score_layer_sets_on_grid`); otherwise
    `manipulate_and_score`, the reference path.
    """
    reuse = offered_prefix_reuse(session)
    if reuse is None:
        return manipulate_and_score(session, wp, directions, layer_sets, distance, batch_size)
    from .prefix import score_layer_sets_on_grid

    return np.stack(
        [
            score_layer_sets_on_grid(
                session, reuse, wp, direction, layer_sets, distance, batch_size
            ).transpose(1, 0, 2)
            for direction in np.asarray(directions, np.float32)
        ]
    )


def offered_prefix_reuse(session: ScoringSession) -> PrefixReuse | None:
    """The session's `PrefixReuse` (``session.prefix_reuse()``), or None when it offers none."""
    offer = getattr(session, "prefix_reuse", None)
    return offer() if callable(offer) else None


def manipulate_and_score(
    session: ScoringSession,
    wp: np.ndarray,
    directions: np.ndarray,
    layer_sets: np.ndarray,
    distance: float,
    batch_size: int,
) -> np.ndarray:
    """Reference for `score_layer_sets`: build every moved code, score `batch_size` at a time."""
    steps = (np.float32(distance) * np.asarray(directions, np.float32)).astype(np.float32)
    mask = np.asarray(layer_sets, bool)[None, :, None, :, None]  # [1, K, 1, L, 1]
    moved = np.where(mask, steps[:, None, None], np.float32(0.0))  # [M, K, 1, L, D]
    codes = (np.asarray(wp, np.float32)[None, None] + moved).astype(np.float32)  # [M, K, n, L, D]
    flat = codes.reshape(-1, *codes.shape[3:])
    scores = np.concatenate(
        [session.score(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)]
    )
    return scores.reshape(*codes.shape[:3], -1)


def latent_geometry(generator: Generator, family: str | None = None) -> LatentGeometry:
    """The generator's latent shapes, w_avg and truncation, as host arrays.

    `family` is the generator's `family` attribute when it has one, else the given default (the
    registry name it was built from)."""
    return LatentGeometry(
        z_dim=int(generator.z_dim),
        w_dim=int(generator.w_dim),
        num_layers=int(generator.num_layers),
        w_avg=generator.average_w().detach().float().cpu().numpy().reshape(-1),
        truncation=generator.truncation_coefficients().detach().float().cpu().numpy().reshape(-1),
        family=getattr(generator, "family", None) or family,
        layer_wise=bool(getattr(generator, "layer_wise", True)),
    )


def resolve_device(requested: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"--device {requested} was asked for but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
            )
        return torch.device(requested)
    raise BackendUnavailableError(f"unknown device '{requested}'; use auto, cpu or cuda")


def quantize_images(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images [B, 3, H, W] -> uint8 [B, H, W, 3] as the reference code does it."""
    pixels = torch.clamp((images + 1.0) * 127.5 + 0.5, 0.0, 255.0)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1)


class TorchSession:
    """The reference backend: torch eager on CPU or CUDA, fp32, no exported graph."""

    def __init__(
        self,
        generator: Generator,
        predictors: Sequence[Predictor],
        device: torch.device | str = "auto",
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        if self.device.type == "cuda":
            # fp32 means fp32: TF32 would change scores beyond the parity tolerance.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.generator = generator
        self.staging = HostStaging(self.device)
        self.scoring_pass = ScoringPass(generator, predictors).to(self.device).eval()
        self.semantic_names = self.scoring_pass.semantic_names
        self.info = SessionInfo(backend="torch", precision="fp32", device=str(self.device))
        self.geometry = latent_geometry(generator)

    def __enter__(self) -> TorchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @torch.inference_mode()
    def map(self, z: np.ndarray) -> np.ndarray:
        _check_shape(z, (self.geometry.z_dim,), "z")
        w = self.generator.map(self.staging.to_device(z, "z"))
        return w.float().cpu().numpy()

    @torch.inference_mode()
    def score(self, wp: np.ndarray) -> np.ndarray:
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        return self.scoring_pass(self.staging.to_device(wp, "wp")).cpu().numpy()

    @torch.inference_mode()
    def render(self, wp: np.ndarray) -> np.ndarray:
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        codes = self.staging.to_device(wp, "render")
        return quantize_images(self.generator.synthesize(codes)).cpu().numpy()

    def prefix_reuse(self) -> PrefixReuse | None:
        """Generator-prefix reuse on this device (None: the generator has no stages)."""
        from .prefix import torch_prefix_reuse

        return torch_prefix_reuse(self.generator, self.scoring_pass, self.device)


class HostStaging:
    """Host -> device copies of float32 NumPy arrays for a session's calls.

    On CUDA the array is copied into a pinned host buffer (one per thread and input name, grown
    on demand, allocated lazily) and from there with ``non_blocking=True``: a DMA the host does
    not wait for, instead of a synchronous copy through pageable memory. A buffer is reused by
    the next call of the same thread only: every session call ends by copying its result back to
    the host, which waits for the stream, so the previous upload has finished by then. On the CPU
    it is the array itself (``torch.from_numpy``: no copy, no buffer)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._local = threading.local()

    def to_device(self, array: np.ndarray, name: str) -> torch.Tensor:
        """`array` as a float32 tensor on the device ([B, ...] as given)."""
        host = torch.from_numpy(np.ascontiguousarray(array, np.float32))
        if self.device.type != "cuda":
            return host.to(self.device)
        pinned = self.buffers().get(name)
        if pinned is None or pinned.numel() < host.numel():
            pinned = torch.empty(host.numel(), dtype=torch.float32, pin_memory=True)
            self.buffers()[name] = pinned
        staged = pinned[: host.numel()].view(host.shape)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True)

    def buffers(self) -> dict[str, torch.Tensor]:
        """This thread's pinned buffers by input name (empty until a CUDA upload)."""
        if not hasattr(self._local, "buffers"):
            self._local.buffers = {}
        return self._local.buffers


def _check_shape(array: np.ndarray, tail: tuple[int, ...], name: str) -> None:
    if array.ndim != len(tail) + 1 or tuple(array.shape[1:]) != tail:
        raise ShapeMismatchError(
            f"{name} has shape {tuple(array.shape)} but the model expects [batch, "
            f"{', '.join(map(str, tail))}]; check that codes and model belong together"
        )
