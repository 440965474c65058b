"""The OpenVINO backend: the exported fused ONNX graph on OpenVINO's CPU runtime, fp32.

    OpenVinoSession(graphs, geometry, semantic_names, threads=None, hint="LATENCY")
        map(z)    -> mapping.onnx     z [B, Z]     -> w [B, D]
        score(wp) -> fused.onnx       wp [B, L, D] -> scores [B, S]
        render(wp)-> synthesis.onnx   (compiled on first call), quantized like the reference

OpenVINO reads the same ONNX files as ONNX Runtime. Each graph is compiled once per batch size it
meets (static shapes let the CPU plugin pick its blocked layouts and fuse convolutions); a run
meets one or two sizes. fp32 means fp32: ``INFERENCE_PRECISION_HINT`` is pinned to f32, because
the plugin would otherwise drop to bf16 on CPUs with AVX-512 BF16 or AMX. openvino is imported
here, lazily.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from rescore.models.errors import BackendUnavailableError

from .graphs import GraphFiles
from .onnx import ExportedGraph, ExportError
from .ort import available_cpus
from .session import LatentGeometry, SessionInfo, _check_shape, quantize_images

log = logging.getLogger(__name__)

HINTS = ("LATENCY", "THROUGHPUT")


def import_openvino() -> Any:
    """The openvino module, or a `BackendUnavailableError` naming the fix."""
    try:
        import openvino
    except ImportError as error:
        raise BackendUnavailableError(
            f"the openvino backend needs the openvino package ({error}); "
            f"pip install rescore[openvino], or use --backend onnxruntime"
        ) from error
    return openvino


def open_openvino(
    graphs: GraphFiles, geometry: LatentGeometry, semantic_names: tuple[str, ...]
) -> OpenVinoSession:
    """The session `open_session` hands out: latency hint, one thread per CPU."""
    return OpenVinoSession(graphs, geometry, semantic_names)


class _CompiledGraph:
    """One ONNX graph, compiled by OpenVINO for each batch size it is run at."""

    def __init__(self, core: Any, graph: ExportedGraph, config: dict[str, Any]) -> None:
        try:
            self._model = core.read_model(str(graph.path))
        except Exception as error:  # openvino raises its own untyped errors
            raise ExportError(
                f"openvino cannot read {graph.path} ({error}); export it again"
            ) from error
        self._core = core
        self._config = config
        self._requests: dict[int, Any] = {}
        self.graph = graph

    def run(self, array: np.ndarray) -> np.ndarray:
        batch = len(array)
        if batch not in self._requests:
            model = self._model.clone()
            model.reshape({self.graph.input_name: [batch, *array.shape[1:]]})
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._requests[batch] = compiled.create_infer_request()
        request = self._requests[batch]
        request.infer({0: np.ascontiguousarray(array, np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


class OpenVinoSession:
    """Scoring session on OpenVINO's CPU plugin (fp32)."""

    def __init__(
        self,
        graphs: GraphFiles,
        geometry: LatentGeometry,
        semantic_names: tuple[str, ...],
        *,
        threads: int | None = None,
        hint: str = "LATENCY",
    ) -> None:
        openvino = import_openvino()
        if hint not in HINTS:
            raise BackendUnavailableError(f"unknown OpenVINO hint '{hint}'; use one of {HINTS}")
        self.graphs = graphs
        self.geometry = geometry
        self.semantic_names = tuple(semantic_names)
        self.threads = threads or available_cpus()
        fused = graphs.graph("fused")
        if tuple(fused.meta.get("semantic_names", ())) != self.semantic_names:
            raise ExportError(
                f"{fused.path} scores other semantics than the predictors loaded now; "
                f"export again with `rescore export`"
            )
        self._core = openvino.Core()
        self._config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": hint,
            "INFERENCE_NUM_THREADS": self.threads,
        }
        self._fused = _CompiledGraph(self._core, fused, self._config)
        self._mapping = _CompiledGraph(self._core, graphs.graph("mapping"), self._config)
        self._synthesis: _CompiledGraph | None = None
        self.info = SessionInfo(backend="openvino", precision="fp32", device="cpu")
        log.info("openvino session on cpu (%s, %d threads)", hint, self.threads)

    def __enter__(self) -> OpenVinoSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fused = self._mapping = self._synthesis = None  # type: ignore[assignment]

    def map(self, z: np.ndarray) -> np.ndarray:
        """z [B, Z] float32 -> w [B, D] float32."""
        _check_shape(z, (self.geometry.z_dim,), "z")
        return self._mapping.run(z)

    def score(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] float32 -> scores [B, S] float32, one fused graph run."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        return self._fused.run(wp)

    def render(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] -> uint8 images [B, H, W, 3], quantized as `quantize_images` does."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        if self._synthesis is None:
            self._synthesis = _CompiledGraph(
                self._core, self.graphs.graph("synthesis"), self._config
            )
        images = self._synthesis.run(wp)  # [B, 3, H, W]
        return quantize_images(torch.from_numpy(images)).numpy()
