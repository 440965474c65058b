"""The `compiled` backend: the fused pass through `torch.compile` (inductor), no ONNX in between.

    CompiledSession(generator, predictors, device, precision="fp32", max_batch=32)
        CUDA: inductor + CUDA graphs (mode="reduce-overhead"); fp32, or bf16 / fp16 autocast
        CPU:  inductor (C++/OpenMP kernels), fp32; bf16 autocast where the CPU supports it

Why: TensorRT and onnxruntime-gpu may be missing on a GPU machine where torch and Triton are not.
Batches are padded up to a power of two (at most `max_batch`; larger batches run in pieces) so
that a run compiles a handful of shapes once and CUDA graphs replay instead of re-recording.

Precision. fp32 means fp32 (TF32 off on CUDA); stated tolerance as the TensorRT backend's:
within 1e-4 norm-wise relative error of torch eager (see `tests/export/test_compiled.py`).
Under bf16 / fp16 every module in `FLOAT32_MODULES` (the exact PIL resize, whose limb sums are
only exact in float32) runs with autocast disabled on float32 inputs, as the TensorRT path pins
the same nodes; scores then agree with fp32 within `REDUCED_PRECISION_TOLERANCE`. The mapping
network always runs fp32: it is tiny and boundaries are fitted on its output.
torch._dynamo / inductor are imported lazily, on first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rescore.models.base import Generator, Predictor
from rescore.models.errors import BackendUnavailableError
from rescore.models.fused import ScoringPass

from .onnx import FLOAT32_MODULES
from .session import LatentGeometry, SessionInfo, _check_shape, latent_geometry, quantize_images

PRECISIONS = ("fp32", "bf16", "fp16")
REDUCED_PRECISION_TOLERANCE = {"bf16": 0.1, "fp16": 0.05}  # norm-wise relative error vs fp32
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

log = logging.getLogger(__name__)


def check_compiled(device: torch.device, precision: str) -> None:
    """Refuse, with the fix, what the compiled backend cannot run here (before compiling)."""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(
            f"the compiled backend runs {', '.join(PRECISIONS)}, not {precision}"
        )
    if device.type not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"the compiled backend runs on cpu or cuda, not '{device}'")
    if device.type == "cpu" and precision == "fp16":
        raise BackendUnavailableError(
            "fp16 on the CPU is not supported by the compiled backend; use --precision bf16 or "
            "fp32, or --device cuda"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise BackendUnavailableError(
            f"{torch.cuda.get_device_name(device)} has no bf16 support; use --precision fp16"
        )


def padded_batch(batch: int, max_batch: int) -> int:
    """The compiled shape a batch of `batch` codes runs at: the next power of two, <= max_batch."""
    if batch >= max_batch:
        return max_batch
    return min(1 << (batch - 1).bit_length(), max_batch)


def keep_float32(module: nn.Module, types: tuple[type[nn.Module], ...] = FLOAT32_MODULES) -> int:
    """Make every submodule of `types` run in float32 with autocast off; return how many.

    The wrapper is an instance attribute, idempotent, and a no-op outside autocast, so a model
    shared with an fp32 session computes exactly what it did.
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, types):
            if not getattr(sub, "_rescore_float32", False):
                sub.forward = _float32_forward(sub.forward)
                sub._rescore_float32 = True
            count += 1
    return count


def _float32_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(forward)
    def run(x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())

    return run


class CompiledSession:
    """Scoring session: the fused pass compiled by inductor (CUDA graphs on a GPU)."""

    def __init__(
        self,
        generator: Generator,
        predictors: Sequence[Predictor],
        device: torch.device,
        *,
        precision: str = "fp32",
        max_batch: int = 32,
    ) -> None:
        check_compiled(device, precision)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
            torch.backends.cudnn.allow_tf32 = False
        self.device = device
        self.precision = precision
        self.max_batch = max(1, int(max_batch))
        self.generator = generator
        self.scoring_pass = ScoringPass(generator, predictors).to(device).eval()
        self.semantic_names = self.scoring_pass.semantic_names
        self.geometry: LatentGeometry = latent_geometry(generator)
        self.info = SessionInfo(backend="compiled", precision=precision, device=str(device))
        pinned = keep_float32(self.scoring_pass) if precision != "fp32" else 0
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs on a GPU
        self._compiled: Any = torch.compile(self.scoring_pass, mode=mode, dynamic=False)
        log.info(
            "compiled session on %s (%s, inductor%s, %d float32-pinned modules)",
            device,
            precision,
            ", CUDA graphs" if mode else "",
            pinned,
        )

    def __enter__(self) -> CompiledSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._compiled = None

    @torch.inference_mode()
    def map(self, z: np.ndarray) -> np.ndarray:
        """z [B, Z] -> w [B, D], eager fp32 (the mapping is a few small matmuls)."""
        _check_shape(z, (self.geometry.z_dim,), "z")
        w = self.generator.map(
            torch.from_numpy(np.ascontiguousarray(z, np.float32)).to(self.device)
        )
        return w.float().cpu().numpy()

    def score(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] -> scores [B, S] float32, in padded pieces of at most `max_batch`."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        codes = np.ascontiguousarray(wp, np.float32)
        pieces = [
            self._score_piece(codes[start : start + self.max_batch])
            for start in range(0, len(codes), self.max_batch)
        ]
        return np.concatenate(pieces, axis=0)

    @torch.inference_mode()
    def render(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] -> uint8 images [B, H, W, 3], eager fp32 (pictures are few)."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        codes = torch.from_numpy(np.ascontiguousarray(wp, np.float32)).to(self.device)
        return quantize_images(self.generator.synthesize(codes)).cpu().numpy()

    @torch.inference_mode()
    def _score_piece(self, codes: np.ndarray) -> np.ndarray:
        count = len(codes)
        size = padded_batch(count, self.max_batch)
        padded = np.concatenate([codes, np.repeat(codes[-1:], size - count, axis=0)], axis=0)
        batch = torch.from_numpy(padded).to(self.device)  # [size, L, D]
        with self._autocast():
            scores = self._compiled(batch)  # [size, S]
        # clone: a CUDA graph's output buffer is overwritten by the next replay
        return scores[:count].float().clone().cpu().numpy()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])
