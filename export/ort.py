"""The ONNX Runtime backend: the exported fused pass on the CPU or CUDA execution provider.

    OrtSession(graphs, geometry, semantic_names, device=...)
        map(z)    -> mapping.onnx     z [B, Z]     -> w [B, D]
        score(wp) -> fused.onnx       wp [B, L, D] -> scores [B, S]; images never leave the graph
        render(wp)-> synthesis.onnx   (opened on the first call), quantized like the reference

On CUDA, inputs are uploaded into device `OrtValue`s and outputs bound to device memory (I/O
binding); only the scores come back. ONNX Runtime would silently drop a provider it cannot start,
so the session checks which providers really run and refuses to pretend. fp32 only: reduced
precision is the TensorRT backend's job. onnxruntime is imported here, lazily.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from rescore.models.errors import BackendUnavailableError

from .graphs import GraphFiles
from .onnx import ExportedGraph, ExportError
from .prefix import entries_of
from .session import LatentGeometry, SessionInfo, _check_shape, quantize_images
from .threads import available_cpus as available_cpus  # re-exported (bench)
from .threads import thread_budget

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def import_onnxruntime() -> Any:
    """The onnxruntime module, or a `BackendUnavailableError` naming the fix."""
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailableError(
            f"the onnxruntime backend needs the onnxruntime package ({error}); "
            f"pip install onnxruntime (or rescore[gpu] for CUDA), or use --backend torch"
        ) from error
    return onnxruntime


def check_onnxruntime(device: torch.device) -> Any:
    """onnxruntime, if it can run on `device`; else a `BackendUnavailableError` naming the fix."""
    ort = import_onnxruntime()
    if device.type not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"onnxruntime runs on cpu or cuda, not '{device}'")
    if device.type == "cuda" and _CUDA not in ort.get_available_providers():
        raise BackendUnavailableError(
            "the onnxruntime installed here has no CUDA execution provider; "
            "pip install rescore[gpu] (onnxruntime-gpu), or use --device cpu"
        )
    return ort


def cuda_provider_available() -> bool:
    """Whether the installed onnxruntime was built with the CUDA execution provider."""
    try:
        return _CUDA in import_onnxruntime().get_available_providers()
    except BackendUnavailableError:
        return False


class OrtSession:
    """Scoring session on ONNX Runtime (fp32), CPU or CUDA execution provider."""

    def __init__(
        self,
        graphs: GraphFiles,
        geometry: LatentGeometry,
        semantic_names: tuple[str, ...],
        *,
        device: torch.device,
        threads: int | None = None,
        optimization: str = "all",
        spin: bool = True,
    ) -> None:
        """`spin`: whether idle pool threads of the mapping and fused graphs spin (ONNX Runtime's
        default); the staged graphs of prefix reuse never spin (they run interleaved)."""
        self._ort = check_onnxruntime(device)
        self.spin = spin
        self.device = device
        self.graphs = graphs
        self.geometry = geometry
        self.semantic_names = tuple(semantic_names)
        self.threads = threads or thread_budget()  # one budget with torch and numba
        self.optimization = optimization
        fused = graphs.graph("fused")
        if tuple(fused.meta.get("semantic_names", ())) != self.semantic_names:
            raise ExportError(
                f"{fused.path} scores other semantics than the predictors loaded now; "
                f"export again with `rescore export`"
            )
        self._fused = self._open(fused, spin)
        self._mapping = self._open(graphs.graph("mapping"), spin)
        self._synthesis: tuple[Any, ExportedGraph] | None = None
        self._prefix_reuse: OrtPrefixReuse | None = None
        label = "cpu" if device.type == "cpu" else f"cuda:{self._device_id}"
        self.info = SessionInfo(backend="onnxruntime", precision="fp32", device=label)
        log.info("onnxruntime session on %s (%s)", label, ", ".join(self._fused[0].get_providers()))

    def __enter__(self) -> OrtSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fused = self._mapping = self._synthesis = None  # type: ignore[assignment]

    def map(self, z: np.ndarray) -> np.ndarray:
        """z [B, Z] float32 -> w [B, D] float32."""
        _check_shape(z, (self.geometry.z_dim,), "z")
        return self._run(self._mapping, z)

    def score(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] float32 -> scores [B, S] float32, one fused graph run."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        return self._run(self._fused, wp)

    def render(self, wp: np.ndarray) -> np.ndarray:
        """wp [B, L, D] -> uint8 images [B, H, W, 3], quantized as `quantize_images` does."""
        _check_shape(wp, (self.geometry.num_layers, self.geometry.w_dim), "wp")
        if self._synthesis is None:
            self._synthesis = self._open(self.graphs.graph("synthesis"))
        images = self._run(self._synthesis, wp)  # [B, 3, H, W] float32
        return quantize_images(torch.from_numpy(images)).numpy()

    def prefix_reuse(self) -> OrtPrefixReuse | None:
        """Generator-prefix reuse through the staged graphs (None: the models have no stages).
        They are opened (exported first, when cached) on the first call."""
        if self._prefix_reuse is None and self.graphs.staged:
            self._prefix_reuse = OrtPrefixReuse(self)
        return self._prefix_reuse

    @property
    def _device_id(self) -> int:
        return 0 if self.device.index is None else int(self.device.index)

    def _open(self, graph: ExportedGraph, spin: bool = True) -> tuple[Any, ExportedGraph]:
        """An inference session for `graph`. `spin`: whether its idle pool threads spin (ONNX
        Runtime's default; staged graphs run interleaved with the fused one, so theirs must not
        hold the cores another session needs)."""
        ort = self._ort
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.device.type == "cpu":
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            providers: list = [_CPU]
        else:
            # fp32 means fp32: the CUDA EP's default TF32 math would break the parity tolerance.
            providers = [(_CUDA, {"device_id": str(self._device_id), "use_tf32": "0"}), _CPU]
        try:
            session = ort.InferenceSession(str(graph.path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ExportError(
                f"onnxruntime cannot load {graph.path} ({error}); export it again"
            ) from error
        if self.device.type == "cuda" and _CUDA not in session.get_providers():
            raise BackendUnavailableError(
                f"onnxruntime could not start its CUDA provider on {self.device} (no GPU or "
                f"driver?); use --device cpu or check nvidia-smi"
            )
        return session, graph

    def _run(self, opened: tuple[Any, ExportedGraph], array: np.ndarray) -> np.ndarray:
        session, graph = opened
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.device.type == "cpu":
            return session.run([graph.output_name], {graph.input_name: array})[0]
        # Codes go up once, the output is produced in device memory, only it comes back.
        value = self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
        binding = session.io_binding()
        binding.bind_ortvalue_input(graph.input_name, value)
        binding.bind_output(graph.output_name, "cuda", self._device_id)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _value(self, array: np.ndarray) -> Any:
        """A float32 host array as an `OrtValue` on the session's device (one upload)."""
        array = np.ascontiguousarray(array, np.float32)
        return self._ort.OrtValue.ortvalue_from_numpy(array, self.device.type, self._device_id)

    def _run_values(self, opened: tuple[Any, ExportedGraph], feeds: dict[str, Any]) -> list[Any]:
        """Every output of a graph with several inputs (staged graphs): `OrtValue`s in, bound by
        name (a graph's unused inputs are skipped), `OrtValue`s out on the session's device, so a
        state handed from stage to stage never crosses to the host."""
        session, graph = opened
        binding = session.io_binding()
        for name in graph.input_names:
            binding.bind_ortvalue_input(name, feeds[name])
        for name in graph.output_names:
            binding.bind_output(name, self.device.type, self._device_id)
        session.run_with_iobinding(binding)
        return binding.get_outputs()


class OrtPrefixReuse:
    """`rescore.export.prefix.PrefixReuse` on ONNX Runtime from the staged graphs
    (`rescore.export.staged`): stage_{e}.onnx runs stage e, scorer.onnx scores images. The prefix
    chains stages 0 .. S-2 keeping each state, a suffix chains stages e .. S-1 and the scorer.
    States are `OrtValue`s on the session's device; only scores come back to the host."""

    def __init__(self, session: OrtSession) -> None:
        self._session = session
        graphs = session.graphs
        scorer = graphs.graph("scorer")
        if tuple(scorer.meta.get("semantic_names", ())) != session.semantic_names:
            raise ExportError(
                f"{scorer.path} scores other semantics than the predictors loaded now; "
                f"export again with `rescore export --part staged`"
            )
        layers = scorer.meta["stage_layers"]  # every staged sidecar records the same layout
        stages = [graphs.graph(f"stage_{e}") for e in range(len(layers))]
        for graph in stages:
            if graph.meta.get("stage_layers") != layers:
                raise ExportError(
                    f"{graph.path} splits synthesis otherwise than {scorer.path} (files of two "
                    f"exports mixed); export again with `rescore export --part staged`"
                )
        self.stage_layers = [tuple(stage) for stage in layers]
        self._stages = [session._open(graph, spin=False) for graph in stages]
        self._scorer = session._open(scorer, spin=False)

    def entries(self, layer_sets: np.ndarray) -> np.ndarray:
        return entries_of(self.stage_layers, layer_sets)

    def prefix(self, wp: np.ndarray) -> list[list[Any]]:
        codes, states = self._session._value(wp), [[]]
        for index in range(len(self._stages) - 1):
            states.append(self._step(index, states[-1], codes))
        return states

    def suffix(self, entry: int, state: list[Any], wp: np.ndarray) -> np.ndarray:
        codes = self._session._value(wp)
        for index in range(entry, len(self._stages)):
            state = self._step(index, state, codes)  # the last stage's: [images]
        return self._session._run_values(self._scorer, {"images": state[0]})[0].numpy()

    def _step(self, index: int, state: list[Any], codes: Any) -> list[Any]:
        """Stage `index` from its input state (OrtValues) with codes (an OrtValue)."""
        feeds = {f"x{index}_{i}": value for i, value in enumerate(state)}
        return self._session._run_values(self._stages[index], {**feeds, "wp": codes})
