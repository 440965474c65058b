"""Pick and open a scoring backend: ask for one and get it, or a clear error.

    torch        eager reference (CPU or CUDA), fp32
    onnxruntime  the exported fused pass on ONNX Runtime: CPU EP, or CUDA EP with
                 onnxruntime-gpu; fp32
    tensorrt     native TensorRT engines on a CUDA GPU, fp32 / fp16 / bf16
    openvino     the exported fused pass on OpenVINO's CPU runtime (rescore[openvino]); fp32
    compiled     torch.compile (inductor) of the fused pass: CUDA graphs on a GPU, fp32 / bf16 /
                 fp16 autocast (the exact resize stays fp32); on the CPU fp32 (bf16 if supported)
    auto         the fastest available here: on a GPU tensorrt, else onnxruntime's CUDA EP, else
                 torch; on the CPU onnxruntime. Logged once.

An explicit name never falls back: a missing package or GPU is a `BackendUnavailableError` naming
the fix. Compiled backends export their graphs to a cache on first use (or take the files a user
exported, `onnx_dir`). GPU packages are imported only inside the functions that need them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rescore.models.base import Generator, Predictor
from rescore.models.errors import BackendUnavailableError
from rescore.models.fused import ScoringPass

from .cache import default_cache_dir
from .session import ScoringSession, TorchSession, latent_geometry, resolve_device

BackendName = Literal["auto", "torch", "onnxruntime", "tensorrt", "compiled", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt", "compiled", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """Which backend, device and precision a run asks for, and where compiled files live.

    cache_dir: exported graphs and engines (None: ``$XDG_CACHE_HOME/rescore``). onnx_dir: use
    the graphs `rescore export` wrote there instead of exporting. max_batch: the largest batch a
    TensorRT engine is built for (larger batches run in pieces): pass the run's batch size.
    """

    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    cache_dir: Path | None = None
    onnx_dir: Path | None = None
    max_batch: int = 32


def open_session(
    generator: Generator, predictors: Sequence[Predictor], spec: BackendSpec = BackendSpec()
) -> ScoringSession:
    """Open a scoring session for `generator` + `predictors` on the backend `spec` asks for."""
    if spec.backend not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend '{spec.backend}'; choose one of {', '.join(BACKENDS)}"
        )
    if spec.precision not in PRECISIONS:
        raise BackendUnavailableError(
            f"unknown precision '{spec.precision}'; choose one of {', '.join(PRECISIONS)}"
        )
    device = resolve_device(spec.device)
    backend = spec.backend
    if backend == "auto":
        backend = choose_backend(device, spec.precision)
        _announce(f"backend auto -> {backend} on {device} ({spec.precision})")
    if backend == "torch":
        if spec.precision != "fp32":
            raise BackendUnavailableError(
                f"the torch backend runs fp32 only (asked for {spec.precision}); use "
                f"--precision fp32, or --backend tensorrt or compiled for reduced precision"
            )
        return TorchSession(generator, predictors, device)
    if backend == "onnxruntime":
        from .ort import OrtSession, check_onnxruntime

        check_onnxruntime(device)  # fail fast, before any export work
        if spec.precision != "fp32":
            raise BackendUnavailableError(
                f"the onnxruntime backend runs fp32 only (asked for {spec.precision}); use "
                f"--precision fp32, or --backend tensorrt or compiled for reduced precision"
            )
        return OrtSession(*_compiled_inputs(generator, predictors, spec), device=device)
    if backend == "openvino":
        from .openvino import import_openvino, open_openvino

        import_openvino()  # fail fast, before any export work
        if device.type != "cpu" or spec.precision != "fp32":
            raise BackendUnavailableError(
                f"the openvino backend runs fp32 on the CPU (asked for {spec.precision} on "
                f"{device}); use --device cpu --precision fp32, or another --backend"
            )
        return open_openvino(*_compiled_inputs(generator, predictors, spec))
    if backend == "compiled":
        from .compiled import CompiledSession, check_compiled

        check_compiled(device, spec.precision)
        return CompiledSession(
            generator, predictors, device, precision=spec.precision, max_batch=spec.max_batch
        )
    from .tensorrt import TensorRTSession, import_tensorrt, require_cuda

    import_tensorrt()  # fail fast, before any export work
    device = require_cuda(device)
    return TensorRTSession(
        *_compiled_inputs(generator, predictors, spec),
        device=device,
        precision=spec.precision,
        max_batch=spec.max_batch,
        cache_dir=spec.cache_dir or default_cache_dir(),
    )


def choose_backend(device: torch.device, precision: str = "fp32") -> str:
    """What `auto` runs on `device`: the fastest backend whose packages and hardware are here."""
    from .ort import cuda_provider_available

    if device.type == "cuda":
        if _installed("tensorrt"):
            return "tensorrt"
        if precision == "fp32":
            return "onnxruntime" if cuda_provider_available() else "torch"
    elif precision == "fp32":
        return "onnxruntime" if _installed("onnxruntime") else "torch"
    raise BackendUnavailableError(
        f"precision {precision} needs the tensorrt backend on a CUDA GPU (here: {device}, "
        f"tensorrt {'installed' if _installed('tensorrt') else 'missing'}); "
        f"pip install rescore[gpu] and use --device cuda, or use --precision fp32"
    )


def _compiled_inputs(
    generator: Generator, predictors: Sequence[Predictor], spec: BackendSpec
) -> tuple:
    """(graph files, geometry, semantic names) for a compiled session."""
    from .graphs import GraphFiles

    names = ScoringPass(generator, predictors).semantic_names  # also refuses clashing names
    if spec.onnx_dir is not None:
        graphs = GraphFiles.given(Path(spec.onnx_dir), generator, predictors)
    else:
        graphs = GraphFiles.cached(generator, predictors, spec.cache_dir or default_cache_dir())
    return graphs, latent_geometry(generator), names


def _installed(package: str) -> bool:
    """Whether `package` can be imported (without importing it)."""
    if package in sys.modules:
        return sys.modules[package] is not None
    return importlib.util.find_spec(package) is not None


@functools.lru_cache(maxsize=16)
def _announce(message: str) -> None:
    """Log a backend choice once per process (a run opens several sessions)."""
    log.info(message)
