"""The native TensorRT backend: ONNX -> engine -> cached engine -> session.

Small chained stages, each usable on its own:
    build_engine(graph, precision, profile)   ONNX file -> serialized engine (bytes)
    EngineCache.get_or_build(key, build)      -> stored under a key of everything that
                                                 invalidates it (see `cache.py`)
    EngineRunner(blob, ...)                   -> device tensors in, device tensors out
    TensorRTSession                           the `ScoringSession` over three engines

Precision: fp32 builds with TF32 off (fp32 means fp32); fp16 and bf16 let TensorRT pick reduced
precision except for the nodes the export marked float32-only (the exact PIL resize, whose limb
sums overflow float16), which are pinned to float32 with OBEY_PRECISION_CONSTRAINTS. The mapping
network always runs fp32: it is tiny and its output is what boundaries are fitted on.

Stated tolerance (checked by the gpu tests), as the norm-wise relative error
max |score - torch score| / max |torch score|: fp32 within 1e-4; fp16 and bf16 within
`REDUCED_PRECISION_TOLERANCE`, and the layer ranking of a rescoring run unchanged wherever torch's
layer Deltas differ by more than twice that (relative to the largest Delta).
tensorrt and CUDA torch are imported lazily, only by the functions that need them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rescore.models.errors import BackendUnavailableError

from .cache import EngineCache, EngineKey
from .graphs import GraphFiles
from .onnx import ExportedGraph, ExportError
from .session import LatentGeometry, SessionInfo, _check_shape, quantize_images

PRECISIONS = ("fp32", "fp16", "bf16")
REDUCED_PRECISION_TOLERANCE = {"fp16": 0.05, "bf16": 0.1}  # norm-wise relative error

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """The tensorrt module, or a `BackendUnavailableError` naming the fix."""
    try:
        import tensorrt
    except ImportError as error:
        raise BackendUnavailableError(
            f"the tensorrt backend needs the tensorrt package ({error}); "
            f"pip install rescore[gpu], or use --backend onnxruntime"
        ) from error
    return tensorrt


def require_cuda(device: torch.device) -> torch.device:
    """`device` if it is a CUDA GPU torch can use, else a `BackendUnavailableError`."""
    if device.type != "cuda":
        raise BackendUnavailableError(
            f"the tensorrt backend runs on a CUDA GPU, not {device}; "
            f"use --device cuda, or --backend onnxruntime for the CPU"
        )
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"the tensorrt backend needs a CUDA GPU visible to torch (torch {torch.__version__} "
            f"sees none); install a CUDA build of torch, or use --backend onnxruntime --device cpu"
        )
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def batch_profile(max_batch: int) -> tuple[int, int, int]:
    """The optimization profile (min, opt, max) for runs of up to `max_batch` codes a batch."""
    if max_batch < 1:
        raise BackendUnavailableError(f"max batch {max_batch} must be at least 1")
    return (1, max_batch, max_batch)


def engine_key(
    graph: ExportedGraph, precision: str, profile: tuple[int, int, int], device: torch.device
) -> EngineKey:
    """The cache key of `graph` built at `precision` and `profile` for the GPU `device`."""
    trt = import_tensorrt()
    return EngineKey(
        onnx_sha256=graph.meta["onnx_sha256"],
        tensorrt_version=str(trt.__version__),
        gpu_name=torch.cuda.get_device_name(device),
        compute_capability=tuple(torch.cuda.get_device_capability(device)),
        precision=precision,
        profile=profile,
    )


def build_engine(
    graph: ExportedGraph,
    *,
    precision: str,
    profile: tuple[int, int, int],
    device: torch.device,
) -> bytes:
    """Parse `graph`'s ONNX file and build a serialized engine for `precision` and `profile`."""
    trt = import_tensorrt()
    check_precision(precision, device)
    builder = trt.Builder(_logger())
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse_from_file(str(graph.path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {graph.path}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp32":
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
    else:
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        pinned = pin_float32_layers(trt, network, graph.meta.get("fp32_nodes", ()))
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log.info("%s engine: %d layers pinned to float32", precision, pinned)
    optimization = builder.create_optimization_profile()
    shape = [int(d) for d in graph.meta["inputs"][0]["shape"][1:]]
    low, opt, high = profile
    optimization.set_shape(graph.input_name, [low, *shape], [opt, *shape], [high, *shape])
    config.add_optimization_profile(optimization)
    with torch.cuda.device(device):
        blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ExportError(
            f"TensorRT could not build an engine from {graph.path} ({precision}, batch profile "
            f"{profile}); see the TensorRT log above, or use --backend onnxruntime"
        )
    return bytes(blob)


def pin_float32_layers(trt: Any, network: Any, node_names: Sequence[str]) -> int:
    """Constrain the layers made from `node_names` (float tensors only) to float32; return count.

    Listing nodes and finding none of them is an error: an engine would silently lose exactness.
    """
    names = set(node_names)
    if not names:
        return 0
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if not _made_from(layer, names):
            continue
        if any(layer.get_output(j).dtype != trt.float32 for j in range(layer.num_outputs)):
            continue  # shape and index tensors keep their integer types
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    if pinned == 0:
        raise ExportError(
            f"none of the {len(names)} float32-only ONNX nodes (exact resize) was found among "
            f"the TensorRT layers; build with --precision fp32"
        )
    return pinned


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse precisions this GPU or TensorRT cannot build (no silent fallback)."""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(
            f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}"
        )
    if precision != "fp32":
        trt = import_tensorrt()
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} builds strongly typed networks only (weak typing, "
                f"which rescore's {precision} engines use, was removed in TensorRT 11); "
                f"pip install 'tensorrt>=10,<11' for {precision}, or use --precision fp32"
            )
    if precision == "bf16":
        trt = import_tensorrt()
        if not hasattr(trt.BuilderFlag, "BF16"):
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} cannot build bf16 engines; upgrade tensorrt or use "
                f"--precision fp16"
            )
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise BackendUnavailableError(
                f"{torch.cuda.get_device_name(device)} has no bf16 support (compute capability "
                f"< 8.0); use --precision fp16"
            )


class EngineDeserializeError(BackendUnavailableError):
    """TensorRT returned no engine for a serialized plan (corrupt, or from another TensorRT)."""


class EngineRunner:
    """One deserialized engine with one input and one output, on device tensors."""

    def __init__(
        self,
        blob: bytes,
        graph: ExportedGraph,
        device: torch.device,
        max_batch: int,
        *,
        source: Path | None = None,
    ) -> None:
        trt = import_tensorrt()
        with torch.cuda.device(device):
            self.runtime = trt.Runtime(_logger())  # must outlive the engine
            self.engine = self.runtime.deserialize_cuda_engine(blob)
            if self.engine is None:
                where = f"the engine {source}" if source else "the engine"
                raise EngineDeserializeError(
                    f"TensorRT {getattr(trt, '__version__', '?')} cannot deserialize {where} "
                    f"for {graph.path.name}; install the tensorrt build "
                    f"that matches this GPU's driver (pip install rescore[gpu]), or use "
                    f"--backend onnxruntime"
                )
            self.context = self.engine.create_execution_context()
        self.device = device
        self.max_batch = max_batch
        self.input_name = graph.input_name
        self.output_name = graph.output_name

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, ...] float32 on the device -> outputs [B, ...] float32 on the device."""
        outputs = []
        stream = torch.cuda.current_stream(self.device)
        for chunk in inputs.split(self.max_batch):  # batches past the profile run in pieces
            chunk = chunk.contiguous()
            self.context.set_input_shape(self.input_name, tuple(chunk.shape))
            shape = tuple(self.context.get_tensor_shape(self.output_name))
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(self.input_name, chunk.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run the {self.input_name} engine")
            outputs.append(out)
        return torch.cat(outputs)


class TensorRTSession:
    """Scoring session on native TensorRT engines (fused, mapping, synthesis on demand)."""

    def __init__(
        self,
        graphs: GraphFiles,
        geometry: LatentGeometry,
        semantic_names: tuple[str, ...],
        *,
        device: torch.device,
        precision: str = "fp32",
        max_batch: int = 32,
        cache_dir: Path,
    ) -> None:
        import_tensorrt()
        self.device = require_cuda(device)
        check_precision(precision, self.device)
        self.graphs = graphs
        self.geometry = geometry
        self.semantic_names = tuple(semantic_names)
        self.precision = precision
        self.max_batch = max_batch
        self.cache = EngineCache(cache_dir)
        fused = graphs.graph("fused")
        if tuple(fused.meta.get("semantic_names", ())) != self.semantic_names:
            raise ExportError(
                f"{fused.path} scores other semantics than the predictors loaded now; "
                f"export again with `rescore export`"
            )
        self._fused = self._runner(fused, precision)
        self._mapping = self._runner(graphs.graph("mapping"), "fp32")
        self._synthesis: EngineRunner | None = None
        self.info = SessionInfo(backend="tensorrt", precision=precision, device=str(self.device))

    def __enter__(self) -> TensorRTSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fused = self._mapping = self._synthesis = None  # type: ignore[assignment]

    def map(self, z: np.ndarray) -> np.ndarray:
        """z [B, Z] float32 -> w [B, D] float32 (fp32 engine)."""
        _check_shape(z, (self.geometry.z_dim,), "z")
        return self._mapping(self._upload(z)).cpu().numpy()

    def score(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] float32 -> scores [B, S] float32; images never leave the engine."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        return self._fused(self._upload(wp)).cpu().numpy()

    def render(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] -> uint8 images [B, H, W, 3] (synthesis engine at the session precision)."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        if self._synthesis is None:
            self._synthesis = self._runner(self.graphs.graph("synthesis"), self.precision)
        return quantize_images(self._synthesis(self._upload(wp))).cpu().numpy()

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self.device)

    def _runner(self, graph: ExportedGraph, precision: str) -> EngineRunner:
        """The engine for `graph` from the cache, built on a miss. A cached engine TensorRT cannot
        deserialize (corrupt though it matches its record, or from another TensorRT build) is
        stale: it is rebuilt and replaced, saying so; a fresh one that fails is an error."""
        profile = batch_profile(self.max_batch)
        key = engine_key(graph, precision, profile, self.device)
        built: list[bool] = []

        def build() -> bytes:
            built.append(True)
            return build_engine(graph, precision=precision, profile=profile, device=self.device)

        blob = self.cache.get_or_build(key, build)
        source = self.cache.paths(key)[0]
        try:
            return EngineRunner(blob, graph, self.device, self.max_batch, source=source)
        except EngineDeserializeError:
            if built:
                raise
        log.warning(
            "TensorRT cannot deserialize the cached engine %s for %s (corrupt, or built by "
            "another TensorRT); rebuilding it",
            source.name,
            graph.path.name,
        )
        blob = build()
        self.cache.store(key, blob)
        return EngineRunner(blob, graph, self.device, self.max_batch, source=source)


def _made_from(layer: Any, names: set[str]) -> bool:
    """Whether a layer comes from one of the ONNX nodes `names`: by its name (the parser names
    a node's first layer after it) or by its metadata (TensorRT >= 10: '[ONNX Layer: <node>]',
    also on the extra layers a node expands into, whose names only get a counter suffix)."""
    if layer.name in names:
        return True
    metadata = getattr(layer, "metadata", "") or ""
    return any(f"ONNX Layer: {name}]" in metadata for name in names)


@functools.lru_cache(maxsize=1)
def _logger() -> Any:
    """TensorRT wants one logger per process."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)
