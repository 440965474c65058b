"""The TensorRT backend. Layer pinning runs here on a fake network; engines need a CUDA GPU and
the tensorrt package (tests marked gpu, skipped elsewhere)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import types

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error

from rescore.engine.boundary import Boundary
from rescore.engine.rescore import RescoreConfig, rescore_boundaries
from rescore.engine.stats import gains
from rescore.export import tensorrt as trt_backend
from rescore.export.backends import BackendSpec, open_session
from rescore.export.cache import EngineCache
from rescore.export.onnx import ExportError
from rescore.export.session import TorchSession
from rescore.export.tensorrt import (
    REDUCED_PRECISION_TOLERANCE,
    batch_profile,
    check_precision,
    pin_float32_layers,
)
from rescore.models.errors import BackendUnavailableError
from rescore.models.registry import GeneratorOptions, ModelRef


class _Layer:
    def __init__(self, name: str, dtypes: list[str], metadata: str = "") -> None:
        self.name, self.metadata, self.precision = name, metadata, None
        self.num_outputs = len(dtypes)
        self._outputs = [types.SimpleNamespace(dtype=d) for d in dtypes]
        self.output_types: dict[int, str] = {}

    def get_output(self, index: int) -> types.SimpleNamespace:
        return self._outputs[index]

    def set_output_type(self, index: int, dtype: str) -> None:
        self.output_types[index] = dtype


class _Network:
    def __init__(self, layers: list[_Layer]) -> None:
        self.layers = layers
        self.num_layers = len(layers)

    def get_layer(self, index: int) -> _Layer:
        return self.layers[index]


FAKE_TRT = types.SimpleNamespace(float32="float32")


def test_float32_nodes_are_pinned_by_name_or_metadata_and_float_outputs_only():
    layers = {
        "exact": _Layer("node_matmul", ["float32"]),
        "other_node": _Layer("node_matmul_1", ["float32"]),
        "expanded": _Layer("node_floor_1_2", ["float32"], "[ONNX Layer: node_floor_1]"),
        "metadata": _Layer("renamed", ["float32"], "[ONNX Layer: node_div_15]"),
        "integer": _Layer("node_select_42", ["int64"]),
        "unrelated": _Layer("node_conv", ["float32"]),
    }
    listed = ["node_matmul", "node_floor_1", "node_div_15", "node_select_42"]
    pinned = pin_float32_layers(FAKE_TRT, _Network(list(layers.values())), listed)
    assert pinned == 3
    for key in ("exact", "expanded", "metadata"):
        assert layers[key].precision == "float32" and layers[key].output_types == {0: "float32"}
    for key in ("other_node", "integer", "unrelated"):
        assert layers[key].precision is None and not layers[key].output_types
    assert pin_float32_layers(FAKE_TRT, _Network([_Layer("a", ["float32"])]), []) == 0
    with pytest.raises(ExportError, match="--precision fp32"):
        pin_float32_layers(FAKE_TRT, _Network([_Layer("node_conv", ["float32"])]), listed)


def test_profiles_and_precisions_are_validated():
    assert batch_profile(16) == (1, 16, 16)
    with pytest.raises(BackendUnavailableError, match="at least 1"):
        batch_profile(0)
    with pytest.raises(BackendUnavailableError, match="fp32, fp16, bf16"):
        check_precision("int8", torch.device("cuda"))


class _FakeTensorRT(types.ModuleType):
    """Just enough of the tensorrt API for `build_engine` and `engine_key`, recording calls."""

    float32 = "float32"
    __version__ = "10.99.0"

    def __init__(self, network: _Network, parses: bool = True, blob: bytes | None = b"plan"):
        super().__init__("tensorrt")
        self.calls: list[tuple] = []
        self.BuilderFlag = types.SimpleNamespace(
            TF32="TF32", FP16="FP16", BF16="BF16", OBEY_PRECISION_CONSTRAINTS="OBEY"
        )
        fake = self

        class Config:
            def clear_flag(self, flag):
                fake.calls.append(("clear", flag))

            def set_flag(self, flag):
                fake.calls.append(("set", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

        class Profile:
            def set_shape(self, name, low, opt, high):
                self.shapes = (name, low, opt, high)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return network

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, net, config):
                return blob

        class Parser:
            num_errors = 0 if parses else 1

            def __init__(self, net, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return parses

            def get_error(self, index):
                return "unsupported node Foo"

        class Engine:
            def create_execution_context(self):
                return object()

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                return None if plan == b"stale" else Engine()  # b"stale": TensorRT refuses it

        self.Builder, self.OnnxParser, self.Runtime = Builder, Parser, Runtime
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch's CUDA queries answered as on an H100, without a GPU."""
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def test_build_engine_sets_precision_flags_pins_the_resize_and_uses_the_profile(
    synthetic_export, monkeypatch, fake_gpu
):
    graph = synthetic_export.graphs["fused"]
    graph = dataclasses.replace(graph, meta={**graph.meta, "fp32_nodes": ["node_matmul"]})
    matmul = _Layer("node_matmul", ["float32"])
    fake = _FakeTensorRT(_Network([matmul, _Layer("node_conv", ["float32"])]))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    trt_backend._logger.cache_clear()
    cuda = torch.device("cuda", 0)
    assert trt_backend.build_engine(graph, precision="fp32", profile=(1, 8, 16), device=cuda) == (
        b"plan"
    )
    assert ("clear", "TF32") in fake.calls and matmul.precision is None
    assert ("profile", ("wp", [1, 10, 32], [8, 10, 32], [16, 10, 32])) in fake.calls
    fake.calls.clear()
    trt_backend.build_engine(graph, precision="fp16", profile=(1, 8, 16), device=cuda)
    assert ("set", "FP16") in fake.calls and ("set", "OBEY") in fake.calls
    assert matmul.precision == "float32"
    key = trt_backend.engine_key(graph, "fp16", (1, 8, 16), cuda)
    assert key.tensorrt_version == "10.99.0" and key.gpu_name == "NVIDIA H100"
    assert key.compute_capability == (9, 0) and key.onnx_sha256 == graph.meta["onnx_sha256"]

    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(_Network([]), parses=False))
    with pytest.raises(ExportError, match="cannot parse.*unsupported node Foo"):
        trt_backend.build_engine(graph, precision="fp32", profile=(1, 8, 16), device=cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(_Network([]), blob=None))
    with pytest.raises(ExportError, match="could not build an engine"):
        trt_backend.build_engine(graph, precision="fp32", profile=(1, 8, 16), device=cuda)
    trt_backend._logger.cache_clear()


def test_bf16_is_refused_where_the_gpu_or_tensorrt_lacks_it(monkeypatch, fake_gpu):
    fake = _FakeTensorRT(_Network([]))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    check_precision("bf16", torch.device("cuda", 0))  # H100, TensorRT with BF16: fine
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(BackendUnavailableError, match="no bf16 support.*--precision fp16"):
        check_precision("bf16", torch.device("cuda", 0))
    del fake.BuilderFlag.BF16
    with pytest.raises(BackendUnavailableError, match="cannot build bf16 engines"):
        check_precision("bf16", torch.device("cuda", 0))


def test_reduced_precision_on_strongly_typed_only_tensorrt_is_a_clear_error(monkeypatch, fake_gpu):
    fake = _FakeTensorRT(_Network([]))
    fake.__version__ = "11.4.0"
    del fake.BuilderFlag.FP16, fake.BuilderFlag.BF16  # TensorRT 11 removed weak typing
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    check_precision("fp32", torch.device("cuda", 0))  # fp32 engines still build
    for precision in ("fp16", "bf16"):
        with pytest.raises(BackendUnavailableError, match="tensorrt>=10,<11"):
            check_precision(precision, torch.device("cuda", 0))


def test_session_builds_fused_at_its_precision_and_mapping_fp32_then_reuses_the_cache(
    synthetic, synthetic_export, tmp_path, monkeypatch, fake_gpu
):
    generator, predictor = synthetic
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(_Network([])))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    builds, runners = [], []

    def build(graph, *, precision, profile, device):
        builds.append((graph.path.stem, precision, profile))
        return f"{graph.path.stem}-{precision}".encode()

    def runner(blob, graph, device, max_batch, *, source):
        runners.append((blob, source.parent.name))
        return object()

    monkeypatch.setattr(trt_backend, "build_engine", build)
    monkeypatch.setattr(trt_backend, "EngineRunner", runner)
    spec = BackendSpec(
        "tensorrt",
        "cuda:0",
        "fp16",
        onnx_dir=synthetic_export.directory,
        cache_dir=tmp_path,
        max_batch=8,
    )
    session = open_session(generator, [predictor], spec)
    assert (session.info.backend, session.info.precision, session.info.device) == (
        "tensorrt",
        "fp16",
        "cuda:0",
    )
    assert builds == [("fused", "fp16", (1, 8, 8)), ("mapping", "fp32", (1, 8, 8))]
    assert runners == [(b"fused-fp16", "engines"), (b"mapping-fp32", "engines")]
    open_session(generator, [predictor], spec)
    assert len(builds) == 2 and runners[2:] == runners[:2]  # loaded from the engine cache


def test_a_cached_engine_tensorrt_cannot_deserialize_is_rebuilt_saying_so(
    synthetic, synthetic_export, tmp_path, monkeypatch, fake_gpu, caplog
):
    generator, predictor = synthetic
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(_Network([])))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trt_backend._logger.cache_clear()
    builds, plan = [], {"bytes": b"plan"}

    def build(graph, *, precision, profile, device):
        builds.append(graph.path.stem)
        return plan["bytes"]

    monkeypatch.setattr(trt_backend, "build_engine", build)
    spec = BackendSpec(
        "tensorrt", "cuda:0", onnx_dir=synthetic_export.directory, cache_dir=tmp_path, max_batch=8
    )
    open_session(generator, [predictor], spec)
    assert builds == ["fused", "mapping"]
    for engine in sorted((tmp_path / "engines").glob("*.engine")):  # matches its record, stale
        engine.write_bytes(b"stale")
        record = engine.with_suffix(".json")
        meta = json.loads(record.read_text())
        meta["engine_sha256"] = hashlib.sha256(b"stale").hexdigest()
        record.write_text(json.dumps(meta))
    with caplog.at_level("WARNING"):
        open_session(generator, [predictor], spec)
    assert builds == ["fused", "mapping"] * 2
    assert caplog.text.count("cannot deserialize the cached engine") == 2
    assert "rebuilding it" in caplog.text
    open_session(generator, [predictor], spec)  # the rebuilt engines replaced the stale ones
    assert len(builds) == 4

    plan["bytes"] = b"stale"  # a TensorRT that cannot load even what it just built: one error
    with pytest.raises(BackendUnavailableError, match=r"cannot deserialize .*; install the"):
        open_session(generator, [predictor], dataclasses.replace(spec, cache_dir=tmp_path / "b"))
    assert builds[4:] == ["fused"]
    trt_backend._logger.cache_clear()


# --- on a CUDA GPU with TensorRT ---------------------------------------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _skip_without_tensorrt() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("needs the tensorrt package (pip install rescore[gpu])")


@pytest.mark.parametrize("model", ["synthetic", "stylegan_color"])
@pytest.mark.gpu
@cuda_only
def test_fp32_engines_match_torch(model, request, tmp_path):
    _skip_without_tensorrt()
    generator, predictor = request.getfixturevalue(model)
    reference = TorchSession(generator, [predictor], "cuda")
    spec = BackendSpec("tensorrt", "cuda", cache_dir=tmp_path, max_batch=4)
    with open_session(generator, [predictor], spec) as session:
        assert (session.info.backend, session.info.precision) == ("tensorrt", "fp32")
        z = np.random.default_rng(0).standard_normal((6, generator.z_dim)).astype(np.float32)
        w = session.map(z)
        assert relative_error(w, reference.map(z)) < PARITY_RTOL
        wp = session.geometry.truncate(w)
        assert relative_error(session.score(wp), reference.score(wp)) < PARITY_RTOL  # 6 > 4
        difference = np.abs(session.render(wp).astype(int) - reference.render(wp).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


@pytest.mark.gpu
@cuda_only
def test_stylegan256_places365_fp32_engine_matches_torch(tmp_path):
    _skip_without_tensorrt()
    from rescore.models.places365 import load_places365, write_random_places365
    from rescore.models.stylegan import load_stylegan, save_random_stylegan

    generator = load_stylegan(save_random_stylegan(tmp_path / "g.pth", resolution=256))
    predictor = load_places365(write_random_places365(tmp_path / "places365"))
    reference = TorchSession(generator, [predictor], "cuda")
    spec = BackendSpec("tensorrt", "cuda", cache_dir=tmp_path / "cache", max_batch=8)
    with open_session(generator, [predictor], spec) as session:
        z = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
        wp = session.geometry.truncate(session.map(z))
        assert relative_error(session.score(wp), reference.score(wp)) < PARITY_RTOL


@pytest.mark.gpu
@cuda_only
def test_engines_are_cached_and_a_corrupt_engine_is_rebuilt(synthetic, tmp_path, monkeypatch):
    _skip_without_tensorrt()
    generator, predictor = synthetic
    spec = BackendSpec("tensorrt", "cuda", cache_dir=tmp_path, max_batch=4)
    builds = []
    build = trt_backend.build_engine
    monkeypatch.setattr(
        trt_backend, "build_engine", lambda *a, **k: builds.append(k["precision"]) or build(*a, **k)
    )
    open_session(generator, [predictor], spec)
    assert builds == ["fp32", "fp32"]  # fused and mapping
    open_session(generator, [predictor], spec)
    assert len(builds) == 2  # both loaded from the cache
    engines = sorted((tmp_path / "engines").glob("*.engine"))
    assert len(engines) == 2
    for engine in engines:  # garbage that still matches its record: TensorRT must refuse it
        engine.write_bytes(b"\0" * 64)
        record = engine.with_suffix(".json")
        meta = json.loads(record.read_text())
        meta["engine_sha256"] = hashlib.sha256(b"\0" * 64).hexdigest()
        record.write_text(json.dumps(meta))
    open_session(generator, [predictor], spec)  # TensorRT refuses them: rebuilt, not an error
    assert builds == ["fp32"] * 4
    assert EngineCache(tmp_path).directory == tmp_path / "engines"


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.gpu
@cuda_only
def test_reduced_precision_stays_within_tolerance_and_keeps_the_layer_ranking(
    precision, synthetic, tmp_path
):
    _skip_without_tensorrt()
    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 needs compute capability 8.0")
    from rescore.engine.spec import ModelSpec

    generator, predictor = synthetic
    spec = ModelSpec(
        ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=32)
    )
    directions = generator.directions.numpy()
    boundaries = [
        Boundary(n, directions[i : i + 1].copy()) for i, n in enumerate(generator.factor_names)
    ]
    config = RescoreConfig(num_latents=64, seed=3, chunk_size=64, batch_size=32)
    tolerance = REDUCED_PRECISION_TOLERANCE[precision]
    deltas = {}
    for backend, wanted in (("torch", "fp32"), ("tensorrt", precision)):
        backend_spec = BackendSpec(backend, "cuda", wanted, cache_dir=tmp_path, max_batch=32)
        with open_session(generator, [predictor], backend_spec) as session:
            assert session.info.precision == wanted
            store = rescore_boundaries(
                session, spec, boundaries, tmp_path / f"{backend}.zarr", config, progress=False
            ).store
        original, manipulated = store.array("original")[:], store.array("manipulated")[:]
        deltas[backend] = (original, manipulated, gains(original, manipulated).mean(axis=0))
    (torch_orig, torch_manip, torch_delta), (trt_orig, trt_manip, trt_delta) = deltas.values()
    assert relative_error(trt_orig, torch_orig) < tolerance
    assert relative_error(trt_manip, torch_manip) < tolerance
    # ranking of layers (layer sets 1..L, not 'all'): every pair that torch separates by more
    # than the tolerance keeps its order
    scale = np.abs(torch_delta).max()
    per_layer_torch, per_layer_trt = torch_delta[:, 1:], trt_delta[:, 1:]  # [M, L, S]
    gap = per_layer_torch[:, :, None, :] - per_layer_torch[:, None, :, :]  # [M, L, L, S]
    trt_gap = per_layer_trt[:, :, None, :] - per_layer_trt[:, None, :, :]
    separated = np.abs(gap) > 2 * tolerance * scale
    assert separated.any()
    assert np.all(np.sign(gap[separated]) == np.sign(trt_gap[separated]))
