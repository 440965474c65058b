"""StyleGAN2 (genforce layout and NVlabs stylegan2-ada networks): parity with the reference code,
loading, the Generator protocol, ONNX export and a whole `rescore run`.

Fixtures in tests/data/fixtures/stylegan2/ (see its README): outputs of genforce/HiGAN's
`stylegan2_generator_network.py` and of NVlabs' `training/networks.py` (impl 'ref', CPU, fp32) on
weights built by the recipe that `seeded_genforce` / `nvlabs_builder.seeded_state` repeat here.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nvlabs_builder import seeded_state, stylegan2_shapes
from typer.testing import CliRunner

from rescore.engine.cli import app
from rescore.models.base import Generator, truncate
from rescore.models.errors import CheckpointError, RescoreError
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator
from rescore.models.stylegan import save_random_stylegan
from rescore.models.stylegan2 import (
    StyleGAN2Config,
    StyleGAN2Generator,
    default_channels,
    from_nvlabs,
    load_stylegan2,
    save_random_stylegan2,
)

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures" / "stylegan2"
RTOL = 1e-4
# The small genforce model of the fixture: 32 px, z = w = 16, hidden 32, fmaps_base 256, max 32.
SMALL = StyleGAN2Config(32, 16, 16, (16,) + (32,) * 7 + (16,), default_channels(32, 256, 32))
NVLABS = dict(z_dim=16, w_dim=16, resolution=32, channel_base=256, channel_max=32, mapping_layers=4)


def relative(actual: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(actual.detach().numpy() - expected).max() / np.abs(expected).max())


def seeded_genforce(config: StyleGAN2Config, seed: int, **kwargs) -> StyleGAN2Generator:
    """The fixture recipe over the genforce keys (sorted): N(0, 1); biases and noise strengths
    x0.1; mapping /0.01; FIR kernels and truncation coefficients as constructed."""
    model = StyleGAN2Generator(config, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name in sorted(state):
            if name.endswith("kernel") or name == "truncation.truncation":
                continue
            values = torch.randn(state[name].shape, generator=generator)
            if name.endswith("bias") or name.endswith("noise_strength"):
                values = values * 0.1
            if name.startswith("mapping."):
                values = values / 0.01
            state[name].copy_(values)
    return model.eval()


def test_genforce_stylegan2_matches_higan_reference():
    expected = np.load(FIXTURES / "genforce_skip32.npz")
    model = seeded_genforce(SMALL, 9, truncation_psi=0.7, truncation_layers=4)
    with torch.no_grad():
        w = model.map(torch.from_numpy(expected["z"]))
        wp = truncate(w, model.average_w(), model.truncation_coefficients())
        images = model.synthesize(torch.from_numpy(expected["wp"]))
    assert relative(w, expected["w"]) < RTOL
    assert relative(wp, expected["wp"]) < RTOL
    assert images.shape == (3, 3, 32, 32)
    assert relative(images, expected["images"]) < RTOL


@pytest.mark.parametrize(
    "tag, c_dim, architecture, clamp",
    [("skip", 0, "skip", None), ("resnet", 0, "resnet", None), ("orig_cond_clamp", 5, "orig", 0.5)],
)
def test_nvlabs_stylegan2_matches_stylegan2_ada_reference(tag, c_dim, architecture, clamp):
    expected = np.load(FIXTURES / "nvlabs_ada32.npz")
    shapes = stylegan2_shapes(c_dim=c_dim, architecture=architecture, **NVLABS)
    state, _ = seeded_state(shapes, 11)
    init_kwargs = {
        "z_dim": 16, "c_dim": c_dim, "w_dim": 16, "img_resolution": 32, "img_channels": 3,
        "mapping_kwargs": {"num_layers": 4},
        "synthesis_kwargs": {"channel_base": 256, "channel_max": 32, "num_fp16_res": 0,
                             "conv_clamp": clamp, "architecture": architecture},
    }  # fmt: skip
    options = GeneratorOptions(truncation_psi=0.7, class_index=2 if c_dim else None)
    model = from_nvlabs(init_kwargs, state, options)
    assert isinstance(model, Generator) and model.num_layers == 8
    with torch.no_grad():
        w = model.map(torch.from_numpy(expected[f"{tag}_z"]))
        wp = truncate(w, model.average_w(), model.truncation_coefficients())
        images = model.synthesize(torch.from_numpy(expected[f"{tag}_wp"]))
    assert relative(w, expected[f"{tag}_w"]) < RTOL
    assert relative(wp, expected[f"{tag}_wp"]) < RTOL
    assert relative(images, expected[f"{tag}_images"]) < RTOL
    if c_dim:
        with pytest.raises(RescoreError, match="--class-index"):
            from_nvlabs(init_kwargs, state, GeneratorOptions())


def test_published_church256_layout_loads_strictly(tmp_path):
    """The default widths give exactly the keys and shapes of stylegan2_church256_generator.pth."""
    manifest = json.loads((FIXTURES.parents[1] / "checkpoint-manifests.json").read_text())
    expected = {k: list(v) for k, v in manifest["checkpoints"]["stylegan2_256"].items()}
    expected.pop("truncation.truncation", None)
    path = save_random_stylegan2(tmp_path / "church.pth", resolution=256, seed=0)
    state = torch.load(path, weights_only=True)
    assert {k: list(v.shape) for k, v in state.items()} == expected
    model = load_stylegan2(path)
    assert (model.resolution, model.num_layers, model.synthesis.architecture) == (256, 14, "skip")


def test_genforce_file_loads_strictly_without_truncation_buffer(tmp_path):
    path = save_random_stylegan2(tmp_path / "g.pth", SMALL, seed=3)
    assert "truncation.truncation" not in torch.load(path, weights_only=True)
    model = load_stylegan2(path, truncation_psi=0.5, truncation_layers=3)
    assert (model.resolution, model.num_layers, model.z_dim) == (32, 8, 16)
    assert model.truncation_coefficients().tolist() == [0.5] * 3 + [1.0] * 5
    state = torch.load(path, weights_only=True)
    del state["synthesis.layer3.noise"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing 1: synthesis.layer3.noise"):
        load_stylegan2(tmp_path / "broken.pth")


def test_protocol_attributes_and_layer_code_weights():
    model = seeded_genforce(SMALL, 1)
    assert model.family == "stylegan2" and model.layer_wise
    weights = model.layer_code_weights()
    assert len(weights) == model.num_layers
    assert all(w.shape[1] == model.w_dim for w in weights)
    # code 1 feeds layer1 (in 32) and output0 (in 32); the last code only the last ToRGB.
    assert weights[1].shape[0] == 64 and weights[-1].shape[0] == 8
    assert weights[-1] is not None and torch.equal(
        weights[-1], model.synthesis.output3.style.fc.weight
    )


def test_registry_reads_genforce_pth_and_refuses_other_families(tmp_path):
    path = save_random_stylegan2(tmp_path / "g.pth", SMALL, seed=3)
    model = build_generator(ModelRef("stylegan2", path))
    assert model.truncation_coefficients()[0] == pytest.approx(0.5)  # HiGAN's default psi
    v1 = save_random_stylegan(tmp_path / "v1.pth", resolution=8)
    with pytest.raises(RescoreError, match="looks like a stylegan generator checkpoint"):
        build_generator(ModelRef("stylegan2", v1))
    with pytest.raises(RescoreError, match="looks like a stylegan2 generator checkpoint"):
        build_generator(ModelRef("stylegan3", path))
    with pytest.raises(RescoreError, match="needs its checkpoint"):
        build_generator(ModelRef("stylegan2"), GeneratorOptions())


def _nvlabs_model(c_dim: int, architecture: str, clamp: float | None) -> StyleGAN2Generator:
    state, _ = seeded_state(stylegan2_shapes(c_dim=c_dim, architecture=architecture, **NVLABS), 4)
    init_kwargs = {
        "z_dim": 16, "c_dim": c_dim, "w_dim": 16, "img_resolution": 32, "img_channels": 3,
        "synthesis_kwargs": {"conv_clamp": clamp, "architecture": architecture},
    }  # fmt: skip
    return from_nvlabs(init_kwargs, state, GeneratorOptions(class_index=1 if c_dim else None))


@pytest.mark.parametrize("layout", ["genforce_skip", "nvlabs_resnet_conditional_clamp"])
def test_onnx_export_matches_torch(tmp_path, layout):
    ort = pytest.importorskip("onnxruntime")
    from rescore.export.onnx import ExportSettings, MappingGraph, SynthesisGraph, export_graph

    if layout == "genforce_skip":
        model, part, wrapper = seeded_genforce(SMALL, 2), torch.randn(3, 8, 16), SynthesisGraph
    else:
        model = _nvlabs_model(3, "resnet", 2.0)
        with torch.no_grad():  # the mapping (with the class embedding) runs eagerly here
            part = truncate(model.map(torch.randn(3, 16)), model.average_w(), torch.ones(8))
        wrapper = SynthesisGraph
    module = wrapper(model)
    graph = export_graph(
        module,
        part[:2],
        tmp_path / "part.onnx",
        input_name="x",
        output_name="y",
        settings=ExportSettings(optimize=False),
    )
    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": part.numpy()})[0]  # batch 3: the batch axis is dynamic
    with torch.no_grad():
        expected = module(part).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < RTOL
    if layout != "genforce_skip":
        mapping = export_graph(
            MappingGraph(model),
            torch.randn(2, 16),
            tmp_path / "mapping.onnx",
            input_name="z",
            output_name="w",
            settings=ExportSettings(optimize=False),
        )
        z = torch.randn(3, 16)
        session = ort.InferenceSession(str(mapping.path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = model.map(z).numpy()
        got = session.run(None, {"z": z.numpy()})[0]
        assert np.abs(got - expected).max() / np.abs(expected).max() < RTOL


@pytest.mark.parametrize("kind", ["genforce_pth", "nvlabs_pkl"])
def test_rescore_run_end_to_end(tmp_path, kind):
    if kind == "genforce_pth":
        tiny = StyleGAN2Config(16, 16, 16, (16,) * 9, default_channels(16, 128, 16))
        path, wplus = save_random_stylegan2(tmp_path / "g.pth", tiny, seed=5), ["--wplus"]
    else:
        path, wplus = FIXTURES / "nvlabs_ada_skip32.pkl", []
    out = tmp_path / "run"
    args = ["run", "-o", str(out), "--generator", f"stylegan2={path}", "-p", "color", "-n", "40"]
    args += ["--rescore-num", "4", "--chosen-num", "8", "--batch-size", "8", "-q", *wplus]
    args += ["--backend", "torch"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["boundaries"]
