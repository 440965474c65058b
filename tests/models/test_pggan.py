"""PGGAN (genforce/HiGAN layout): published keys, parity with HiGAN's code, loader, geometry.

Parity fixture `tests/data/fixtures/pggan/pggan16.npz` was computed by HiGAN's
`models/pggan_generator_network.py` (github:genforce/higan, run outside this repository) as
`PGGANGeneratorNet(resolution=16, z_space_dim=8, fmaps_base=64, fmaps_max=16)` loaded with
strict=True from `save_random_pggan(resolution=16, z_space_dim=8, channels=[16, 8, 4], seed=0)`
(weights stored in the fixture under `weight/...`), on z = 1.7 * randn(4, 8) (torch generator
seed 1). `sefa_weight` is genforce/sefa's `factorize_weight` matrix for PGGAN
(layer0 weight flipped, permuted, flattened: [Z, 16 C]).
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
from rescore.export.onnx import SynthesisGraph, export_graph
from rescore.models.base import Generator
from rescore.models.errors import CheckpointError, RescoreError, ShapeMismatchError
from rescore.models.pggan import PGGANGenerator, load_pggan, pggan_channels, save_random_pggan
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "fixtures" / "pggan" / "pggan16.npz"
TINY = dict(resolution=16, z_space_dim=8, channels=[16, 8, 4])


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return dict(data)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_pggan(tmp_path_factory.mktemp("pggan") / "pggan16.pth", **TINY, seed=0)


def test_state_dict_equals_published_manifest() -> None:
    manifest = json.loads((DATA / "checkpoint-manifests.json").read_text())["checkpoints"]
    with torch.device("meta"):
        model = PGGANGenerator(256)
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert shapes == manifest["pggan_256"]
    assert pggan_channels(256) == [512, 512, 512, 512, 256, 128, 64]


def test_geometry_one_code_no_mapping_no_truncation(tiny_file: Path) -> None:
    model = load_pggan(tiny_file)
    assert isinstance(model, Generator)
    assert (model.family, model.layer_wise, model.num_layers) == ("pggan", False, 1)
    assert (model.resolution, model.z_dim, model.w_dim) == (16, 8, 8)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.map(z), z)
    assert torch.equal(model.truncation_coefficients(), torch.ones(1))
    assert torch.equal(model.average_w(), torch.zeros(8))
    with torch.no_grad():
        images = model.synthesize(z[:, None])
        assert images.shape == (3, 3, 16, 16)
        assert torch.equal(model(z), images)
        # The first layer's pixel norm makes the image independent of |z| (genforce's z norm).
        assert _relative_error(model.synthesize(3.0 * z[:, None]), images) < 1e-5
    with pytest.raises(ShapeMismatchError, match=r"\[batch, 1, 8\]"):
        model.synthesize(torch.zeros(2, 2, 8))
    with pytest.raises(ShapeMismatchError, match=r"\[batch, 8\]"):
        model.map(torch.zeros(2, 9))


def test_images_match_higan_reference(fixture, tiny_file: Path) -> None:
    """Same weights as HiGAN's run (the recipe reproduces them), same images within 1e-4."""
    reference_weights = {
        k[len("weight/") :]: v for k, v in fixture.items() if k.startswith("weight/")
    }
    ours = torch.load(tiny_file, weights_only=True)
    assert sorted(ours) == sorted(reference_weights)
    for name, value in ours.items():
        np.testing.assert_array_equal(value.numpy(), reference_weights[name], err_msg=name)
    model = load_pggan(tiny_file)
    with torch.no_grad():
        images = model.synthesize(torch.from_numpy(fixture["z"])[:, None])
    assert _relative_error(images, fixture["images"]) < 1e-4
    assert np.abs(fixture["images"]).max() > 0.1  # a non-trivial image


def test_layer_code_weights_are_sefa_columns(fixture, tiny_file: Path) -> None:
    (weight,) = load_pggan(tiny_file).layer_code_weights()
    assert weight.shape == (16 * 16, 8)  # [16 C, Z]: one row per output unit of the dense layer
    np.testing.assert_array_equal(weight.detach().T.numpy(), fixture["sefa_weight"])


def test_refuses_other_families_and_damaged_files(tmp_path: Path, tiny_file: Path) -> None:
    stylegan = {
        "mapping.dense0.fc.weight": torch.zeros(2, 2),
        "mapping.dense0.wscale.bias": torch.zeros(2),
    }
    torch.save(stylegan, tmp_path / "sg.pth")
    with pytest.raises(CheckpointError, match="looks like a stylegan checkpoint"):
        load_pggan(tmp_path / "sg.pth")
    state = torch.load(tiny_file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "layer3.wscale.bias"}, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"missing 1: layer3\.wscale\.bias"):
        load_pggan(tmp_path / "m.pth")
    torch.save({**state, "lod": torch.tensor(1.0)}, tmp_path / "lod.pth")
    with pytest.raises(CheckpointError, match="lod 1.0"):
        load_pggan(tmp_path / "lod.pth")
    fused = {**state, "layer2.weight": torch.zeros(3, 3, 16, 8)}
    torch.save(fused, tmp_path / "fused.pth")
    with pytest.raises(CheckpointError, match="fused upscaling"):
        load_pggan(tmp_path / "fused.pth")


def test_registry_builds_it_from_a_path_only(tiny_file: Path) -> None:
    model = build_generator(ModelRef.parse(f"pggan={tiny_file}"), GeneratorOptions())
    assert isinstance(model, PGGANGenerator) and not model.training
    with pytest.raises(RescoreError, match="pggan=/path/to/pggan_bedroom256_generator.pth"):
        build_generator(ModelRef("pggan"), GeneratorOptions())


def test_rescore_run_end_to_end_on_a_genforce_file(tiny_file: Path, tmp_path: Path) -> None:
    """`rescore run` with tiny N/K: one code, so only the all-layers row is re-scored, and the
    summary says so."""
    out = tmp_path / "run"
    args = ["run", "-o", str(out), "--generator", f"pggan={tiny_file}", "-p", "color"]
    args += ["-n", "60", "--rescore-num", "6", "--chosen-num", "10", "--batch-size", "30"]
    result = CliRunner().invoke(app, [*args, "--backend", "torch", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    entry = next(iter(summary["boundaries"].values()))
    assert summary["layer_wise"] is False
    assert entry["layer_delta"] == [] and entry["peak_layer"] is None
    assert np.isfinite(entry["delta_all_layers"])
    rows = (out / "rescore.csv").read_text().splitlines()[1:]
    assert rows and all(row.split(",")[1] == "all" for row in rows)


def test_onnx_export_matches_torch(tiny_file: Path, tmp_path: Path) -> None:
    model = load_pggan(tiny_file)
    wp = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(0))
    graph = export_graph(
        SynthesisGraph(model), wp[:2], tmp_path / "synthesis.onnx", input_name="wp",
        output_name="images",
    )  # fmt: skip
    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    (images,) = session.run(None, {"wp": wp.numpy()})  # batch 3: the batch axis is dynamic
    with torch.no_grad():
        assert _relative_error(images, model.synthesize(wp)) < 1e-4
