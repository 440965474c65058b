"""BigGAN-deep (pytorch-pretrained-BigGAN layout): parity with the port, latent geometry, loader.

Parity fixture `tests/data/fixtures/biggan/biggan32.npz` was computed by the port's `model.py`
(github:huggingface/pytorch-pretrained-BigGAN, run outside this repository, eval mode) on the
checkpoint directory `save_random_biggan(TINY, seed=0)` (its weights are recreated here from the
seed; `weight_sum` guards the recipe), class 3:
    w          = 0.4 * scipy truncnorm(-2, 2).ppf(norm.cdf(z)), z = randn(4, 8) (torch seed 1)
    images     = BigGAN(w, one_hot(3), truncation=0.4)
    images_psi1= BigGAN(w / 0.4, one_hot(3), truncation=1.0)
    images_wp  = the port's own modules with conditioning vector [wp[:, l], embed] fed to
                 conditioned layer l (gen_z, then each GenBlock), wp = 0.4 * randn(2, 6, 8)
                 (torch seed 2): the layer-wise code rescore defines for BigGAN-deep.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from rescore.engine.cli import app
from rescore.export.onnx import MappingGraph, SynthesisGraph, export_graph
from rescore.models.base import Generator
from rescore.models.biggan import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    BigGANConfig,
    BigGANGenerator,
    GenBlock,
    SpectralNormed,
    load_biggan,
    normal_ppf,
    save_random_biggan,
    truncate_z,
)
from rescore.models.errors import CheckpointError, RescoreError
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "biggan" / "biggan32.npz"
TINY = BigGANConfig(
    output_dim=32,
    z_dim=8,
    class_embed_dim=8,
    channel_width=4,
    num_classes=5,
    layers=((False, 16, 16), (True, 16, 8), (False, 8, 4), (True, 4, 2), (True, 2, 1)),
    attention_layer_position=2,
    eps=1e-4,
    n_stats=51,
)


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return dict(data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_biggan(tmp_path_factory.mktemp("biggan") / "biggan32", TINY, seed=0)


def test_recipe_reproduces_the_reference_weights(fixture, checkpoint: Path) -> None:
    state = torch.load(checkpoint / WEIGHTS_NAME, weights_only=True)
    total = sum(float(v.double().sum()) for v in state.values())
    assert total == pytest.approx(float(fixture["weight_sum"]), rel=1e-12)


def test_images_match_the_port(fixture, checkpoint: Path) -> None:
    model = load_biggan(checkpoint, class_index=3, truncation_psi=0.4)
    with torch.no_grad():
        w = model.map(torch.from_numpy(fixture["z"]))
        images = model.synthesize(torch.from_numpy(fixture["w"])[:, None].expand(-1, 6, -1))
        images_wp = model.synthesize(torch.from_numpy(fixture["wp"]))
    assert _relative_error(w, fixture["w"]) < 1e-5
    assert _relative_error(images, fixture["images"]) < 1e-4
    assert _relative_error(images_wp, fixture["images_wp"]) < 1e-4
    assert np.abs(fixture["images_wp"] - fixture["images"][:2]).max() > 1e-2  # layers matter
    unblended = load_biggan(checkpoint, class_index=3, truncation_psi=1.0)
    with torch.no_grad():
        images_psi1 = unblended(torch.from_numpy(fixture["z"]))
    assert _relative_error(images_psi1, fixture["images_psi1"]) < 1e-4


def test_truncation_map_is_the_truncated_normal_inverse_cdf() -> None:
    p = torch.linspace(1e-6, 1 - 1e-6, 20001, dtype=torch.float64)
    assert torch.allclose(normal_ppf(p), torch.special.ndtri(p), rtol=1e-12, atol=1e-12)
    z = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    w = truncate_z(z, 0.5)
    assert w.abs().max() <= 1.0 + 1e-6  # psi * 2
    order = torch.argsort(z[:, 0])
    assert bool((w[order, 0].diff() >= 0).all())  # monotone in z
    assert w.std().item() == pytest.approx(0.5 * 0.8796, abs=0.01)  # truncnorm(-2, 2) std


def test_geometry_and_layer_code_weights(checkpoint: Path) -> None:
    model = load_biggan(checkpoint, class_index=1)
    assert isinstance(model, Generator)
    assert (model.family, model.layer_wise, model.truncation_psi) == ("biggan", True, 0.4)
    assert (model.num_layers, model.z_dim, model.w_dim, model.resolution) == (6, 8, 8, 32)
    assert torch.equal(model.truncation_coefficients(), torch.ones(6))
    assert torch.equal(model.average_w(), torch.zeros(8))
    for layer in model.modules():  # the cached normalised weights are those of the file
        if isinstance(layer, SpectralNormed):
            assert torch.equal(layer.weight, layer.normalized_weight())
    weights = model.layer_code_weights()
    blocks = [m for m in model.generator.layers if isinstance(m, GenBlock)]
    assert len(weights) == 6 and weights[0].shape == (4 * 4 * 16 * 4, 8)
    for block, weight in zip(blocks, weights[1:], strict=True):
        widths = [getattr(block, f"bn_{i}").scale.weight_orig.shape[0] for i in range(4)]
        assert weight.shape == (2 * sum(widths), 8)
    first = blocks[0].bn_0.scale.weight_orig  # [C, 2Z]: its z columns lead layer 1's rows
    assert torch.equal(weights[1][: first.shape[0]], first[:, :8])
    # Moving one layer's copy of z changes the image; the copies of other layers are untouched.
    wp = model.map(torch.randn(2, 8)).unsqueeze(1).expand(-1, 6, -1).clone()
    moved = wp.clone()
    moved[:, 3] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model.synthesize(wp), model.synthesize(moved))


def test_class_is_required_and_checked(checkpoint: Path) -> None:
    with pytest.raises(RescoreError, match="--class-index N"):
        build_generator(ModelRef.parse(f"biggan={checkpoint}"), GeneratorOptions())
    with pytest.raises(RescoreError, match=r"outside \[0, 5\)"):
        load_biggan(checkpoint, class_index=5)
    with pytest.raises(RescoreError, match=r"outside \(0, 1\]"):
        load_biggan(checkpoint, class_index=0, truncation_psi=1.5)
    model = build_generator(
        ModelRef.parse(f"biggan={checkpoint / WEIGHTS_NAME}"), GeneratorOptions(class_index=2)
    )
    assert isinstance(model, BigGANGenerator) and model.class_index == 2 and not model.training


def test_loader_validates_weights_against_config(checkpoint: Path, tmp_path: Path) -> None:
    config = json.loads((checkpoint / CONFIG_NAME).read_text())
    wider = tmp_path / "wider"
    wider.mkdir()
    (wider / CONFIG_NAME).write_text(json.dumps({**config, "channel_width": 8}))
    (wider / WEIGHTS_NAME).write_bytes((checkpoint / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_biggan(wider, class_index=0)
    (wider / CONFIG_NAME).write_text(json.dumps({**config, "G_ch": 64}))
    with pytest.raises(CheckpointError, match="unknown keys"):
        load_biggan(wider, class_index=0)
    (wider / CONFIG_NAME).write_text(json.dumps({**config, "output_dim": 64}))
    with pytest.raises(CheckpointError, match="do not reach output_dim 64"):
        load_biggan(wider, class_index=0)
    torch.save({"layer0.conv.weight": torch.zeros(1), "output0.conv.weight": torch.zeros(1)},
               wider / WEIGHTS_NAME)  # fmt: skip
    (wider / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="looks like a pggan checkpoint"):
        load_biggan(wider, class_index=0)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / WEIGHTS_NAME).write_bytes((checkpoint / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match="no config.json"):
        load_biggan(lonely / WEIGHTS_NAME, class_index=0)
    with pytest.raises(RescoreError, match="biggan=/path/to/dir"):
        build_generator(ModelRef("biggan"), GeneratorOptions(class_index=0))


def test_rescore_run_end_to_end_on_a_checkpoint_directory(checkpoint: Path, tmp_path: Path) -> None:
    """`rescore run --class-index 3` with tiny N/K: one Delta row per conditioned layer."""
    out = tmp_path / "run"
    args = ["run", "-o", str(out), "--generator", f"biggan={checkpoint}", "-p", "color"]
    args += ["-n", "40", "--rescore-num", "4", "--chosen-num", "8", "--batch-size", "20"]
    args += ["-s", "brightness", "-s", "warmth", "--backend", "torch", "--device", "cpu", "-q"]
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "pass --class-index N" in missing.stderr
    result = CliRunner().invoke(app, [*args, "--class-index", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["boundaries"]) == {"brightness", "warmth"}
    for entry in summary["boundaries"].values():
        assert len(entry["layer_delta"]) == 6 and entry["delta_all_layers"] > 0


def test_onnx_export_matches_torch(checkpoint: Path, tmp_path: Path) -> None:
    """Mapping (the truncated-normal transform) and synthesis on ONNX Runtime vs torch eager."""
    model = load_biggan(checkpoint, class_index=3)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    wp = model.map(z)[:, None].expand(-1, 6, -1).contiguous()
    wp[:, 2] = torch.randn(3, 8, generator=torch.Generator().manual_seed(1)) * 0.4
    parts = [(MappingGraph(model), z, "z", "w"), (SynthesisGraph(model), wp, "wp", "images")]
    for module, example, input_name, output_name in parts:
        path = tmp_path / f"{output_name}.onnx"
        export_graph(module, example[:2], path, input_name=input_name, output_name=output_name)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (actual,) = session.run(None, {input_name: example.numpy()})  # batch 3: dynamic axis
        with torch.no_grad():
            assert _relative_error(actual, module(example)) < 1e-4, output_name
