"""`open_session`: auto picks what is here, explicit backends never fall back, errors name a fix.

No GPU here: GPU-only paths are exercised up to where they need one, with missing packages
simulated by hiding the module (`sys.modules[name] = None` makes `import name` fail).
"""

from __future__ import annotations

import logging
import sys
import types

import pytest
import torch

from rescore.export import backends
from rescore.export.backends import BackendSpec, choose_backend, open_session
from rescore.export.graphs import GraphFiles
from rescore.export.ort import OrtSession
from rescore.export.session import TorchSession
from rescore.export.tensorrt import require_cuda
from rescore.models.errors import BackendUnavailableError


@pytest.fixture
def no_export(monkeypatch):
    """Fail the test if a session tries to export: availability checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("exported before checking that the backend can run")

    monkeypatch.setattr(GraphFiles, "cached", refuse)
    monkeypatch.setattr(GraphFiles, "given", refuse)


def test_auto_on_cpu_runs_onnxruntime_and_says_so_once(synthetic, synthetic_export, caplog):
    generator, predictor = synthetic
    backends._announce.cache_clear()
    spec = BackendSpec("auto", "cpu", onnx_dir=synthetic_export.directory)
    with caplog.at_level(logging.INFO, logger="rescore.export.backends"):
        first = open_session(generator, [predictor], spec)
        second = open_session(generator, [predictor], spec)
    assert isinstance(first, OrtSession) and isinstance(second, OrtSession)
    assert first.info.backend == "onnxruntime" and first.info.device == "cpu"
    assert first.info.precision == "fp32"
    messages = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    assert messages == ["backend auto -> onnxruntime on cpu (fp32)"]


def test_explicit_torch_and_auto_without_onnxruntime(synthetic, monkeypatch, no_export):
    generator, predictor = synthetic
    session = open_session(generator, [predictor], BackendSpec("torch", "cpu"))
    assert isinstance(session, TorchSession) and session.info.backend == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert choose_backend(torch.device("cpu")) == "torch"
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        open_session(generator, [predictor], BackendSpec("onnxruntime", "cpu"))


def test_tensorrt_without_the_package_or_a_gpu_names_the_fix(synthetic, monkeypatch, no_export):
    generator, predictor = synthetic
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install rescore\[gpu\]"):
        open_session(generator, [predictor], BackendSpec("tensorrt", "cpu"))
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # package, no GPU
    with pytest.raises(BackendUnavailableError, match="--device cuda"):
        open_session(generator, [predictor], BackendSpec("tensorrt", "cpu"))
    with pytest.raises(BackendUnavailableError, match="--device cpu"):
        open_session(generator, [predictor], BackendSpec("tensorrt", "cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="--backend onnxruntime --device cpu"):
        require_cuda(torch.device("cuda"))


def test_onnxruntime_on_cuda_without_onnxruntime_gpu_names_the_fix(
    synthetic, monkeypatch, no_export
):
    generator, predictor = synthetic
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend torch sees a GPU
    with pytest.raises(BackendUnavailableError, match=r"rescore\[gpu\] \(onnxruntime-gpu\)"):
        open_session(generator, [predictor], BackendSpec("onnxruntime", "cuda"))


def test_auto_picks_the_fastest_installed_backend_for_the_device(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert choose_backend(cuda) == "tensorrt"
    assert choose_backend(cuda, "bf16") == "tensorrt"
    assert choose_backend(cpu) == "onnxruntime"
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    # plain onnxruntime here: no CUDA provider, so torch on the GPU beats onnxruntime on the CPU
    assert choose_backend(cuda) == "torch"
    with pytest.raises(BackendUnavailableError, match="--precision fp32"):
        choose_backend(cuda, "fp16")
    with pytest.raises(BackendUnavailableError, match="--precision fp32"):
        choose_backend(cpu, "bf16")


def test_unknown_names_and_unsupported_precisions_are_refused(synthetic, no_export):
    generator, predictor = synthetic
    with pytest.raises(BackendUnavailableError, match="auto, torch, onnxruntime, tensorrt"):
        open_session(generator, [predictor], BackendSpec("tvm", "cpu"))
    with pytest.raises(BackendUnavailableError, match="fp32, fp16, bf16"):
        open_session(generator, [predictor], BackendSpec("torch", "cpu", precision="int8"))
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(BackendUnavailableError, match="--backend tensorrt"):
            open_session(generator, [predictor], BackendSpec(backend, "cpu", precision="fp16"))
