"""SeFa and GANSpace directions: parity with the SeFa reference, recovery of the synthetic
model's factors, streamed PCA equal to in-memory PCA, and boundary files every command reads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rescore.engine.boundary import load_boundaries
from rescore.engine.cli import app
from rescore.engine.directions import (
    factorize,
    layer_code_weights,
    pca_directions,
    sefa_directions,
    write_directions,
)
from rescore.engine.errors import ScoreError
from rescore.engine.sample import SampleConfig, sample_and_score
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef
from rescore.models.stylegan import StyleGANGenerator
from rescore.models.synthetic import FACTOR_CHANNELS, build_synthetic

FIXTURE = Path(__file__).parents[1] / "data" / "fixtures" / "sefa" / "sefa_stylegan16.npz"
runner = CliRunner()


def _seeded_stylegan(seed: int = 20240) -> StyleGANGenerator:
    """The generator of the fixture's recipe (tests/data/fixtures/sefa/README.md)."""
    with torch.random.fork_rng(devices=[]):
        model = StyleGANGenerator(
            16, z_space_dim=64, w_space_dim=64, fmaps_base=1024, fmaps_max=64, num_mapping_layers=2
        )
    generator = torch.Generator().manual_seed(seed)
    kept = ("synthesis.lod", "truncation.truncation")
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in kept or name.endswith("blur.kernel"):
                continue
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model


def _same_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    signs = np.sign(np.sum(a * b, axis=1, keepdims=True))
    return bool(np.allclose(a, b * signs, atol=atol))


@pytest.mark.parametrize("tag, layers_text", [("all", "all"), ("2-3", "2-3")])
def test_sefa_matches_the_reference_factorization(tag, layers_text):
    reference = np.load(FIXTURE, allow_pickle=False)
    order = np.argsort(reference[f"eigenvalues_{tag}"])[::-1]
    ref_values = reference[f"eigenvalues_{tag}"][order].astype(np.float64)
    ref_vectors = reference[f"eigenvectors_{tag}"][order].astype(np.float64)
    directions = sefa_directions(_seeded_stylegan(), layers_text, num=64)
    assert directions.metadata["layers"] == reference[f"layers_{tag}"].tolist()
    assert np.max(np.abs(directions.values - ref_values)) <= 1e-5
    # Eigenvalues are distinct (smallest gap ~1e-3 here), so eigenvectors are unique up to sign.
    assert _same_up_to_sign(directions.vectors.astype(np.float64), ref_vectors, atol=2e-4)


def test_sefa_on_the_synthetic_model_recovers_every_factor_direction():
    generator = build_synthetic()
    directions = generator.directions.numpy().astype(np.float64)  # [F, D]
    weights = layer_code_weights(generator)
    values, vectors = factorize(weights, range(generator.num_layers), num=len(directions))
    match = np.abs(vectors @ directions.T)  # [k, F]
    assert np.allclose(np.sort(match.max(axis=1)), 1.0, atol=1e-6)
    assert sorted(match.argmax(axis=1)) == list(range(len(directions)))  # each factor once
    groups = generator.factor_layers
    expected = [len(groups[name]) * FACTOR_CHANNELS[name] for name in generator.factor_names]
    assert np.allclose(values, np.array(expected, float)[match.argmax(axis=1)])
    # One group's layers give exactly that group's factors.
    layers = generator.factor_layers["object_size"]
    _, top = factorize(weights, layers, num=3)
    found = {generator.factor_names[i] for i in np.abs(top @ directions.T).argmax(axis=1)}
    assert found == {"object_size", "object_x", "object_presence"}


def test_sefa_refuses_a_generator_without_layer_code_weights():
    with pytest.raises(ScoreError, match="layer_code_weights"):
        sefa_directions(torch.nn.Linear(2, 2))
    with pytest.raises(ScoreError, match="--num"):
        sefa_directions(build_synthetic(), num=0)


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    spec = ModelSpec(
        ModelRef("toy_models:build_toy_generator"), (ModelRef("toy_models:build_toy_predictor"),)
    )
    path = tmp_path_factory.mktemp("pca") / "samples.zarr"
    with open_model_session(spec, BackendSpec("torch", "cpu")) as session:
        config = SampleConfig(90, 1, 32, 16, save_wp=True)
        return sample_and_score(session, spec, path, config, progress=False)


@pytest.mark.parametrize("space", ["w", "wp"])
def test_streamed_pca_equals_in_memory_pca(toy_store, space):
    codes = toy_store.array(space)[:].astype(np.float64).reshape(90, -1)
    values, vectors = np.linalg.eigh(np.cov(codes, rowvar=False))
    order = np.argsort(values)[::-1][:3]
    found = pca_directions(toy_store, space, num=3)
    assert np.allclose(found.values, values[order], rtol=1e-9, atol=1e-12)
    flat = found.vectors.reshape(3, -1).astype(np.float64)
    if space == "wp":  # layers were scaled to unit norm for the boundary format
        flat = (found.vectors * np.array(found.metadata["layer_norms"])[..., None]).reshape(3, -1)
    assert _same_up_to_sign(flat, vectors[:, order].T, atol=1e-5)
    ratio = np.array(found.metadata["explained_variance_ratio"])
    assert np.allclose(ratio, values[order] / values.sum())


def test_directions_are_boundary_files_with_their_metadata(toy_store, tmp_path):
    found = pca_directions(toy_store, "wp", num=2, info={"family": "toy"})
    paths = write_directions(found, tmp_path)
    assert [p.name for p in paths] == ["pca_0.npy", "pca_1.npy"]
    loaded = load_boundaries([tmp_path / "directions" / "pca"])
    assert loaded[0].normal.shape == (1, 4, 6) and loaded[0].space == "wp"
    assert np.allclose(np.linalg.norm(loaded[0].normal, axis=-1), 1.0, atol=1e-6)
    sidecar = json.loads(paths[1].with_suffix(".json").read_text())
    assert sidecar["format"] == "rescore.boundary" and sidecar["method"] == "pca"
    assert sidecar["rank"] == 1 and sidecar["family"] == "toy" and sidecar["space"] == "wp"
    assert sidecar["explained_variance"] > 0 and len(sidecar["layer_norms"]) == 4


def test_cli_writes_sefa_directions(tmp_path):
    result = runner.invoke(
        app, ["directions", "sefa", "-o", str(tmp_path), "--generator", "synthetic", "-n", "3"]
    )
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "directions" / "sefa" / "sefa_0.json").read_text())
    assert sidecar["method"] == "sefa" and sidecar["layers"] == list(range(10))
    assert sidecar["eigenvalue"] == pytest.approx(27.0) and sidecar["family"] == "synthetic"
    assert sidecar["generator"]["name"] == "synthetic"
    result = runner.invoke(app, ["directions", "pca", "-o", str(tmp_path / "none")])
    assert result.exit_code == 2 and "rescore: error:" in result.stderr


@pytest.mark.parametrize(
    "command", [["directions", "sefa"], ["directions", "pca"], ["name"], ["lineargan"]]
)
def test_new_commands_have_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output
