"""Naming by re-scoring: on the synthetic model, SeFa + `rescore name` recovers every built-in
factor, with its sign and its layer group; a direction that moves nothing stays unnamed."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.engine.boundary import Boundary, save_boundary
from rescore.engine.cli import app
from rescore.engine.directions import directions_dir, sefa_directions, write_directions
from rescore.engine.layout import RunDirectory
from rescore.engine.naming import NAMES_COLUMNS, NameConfig, layers_text, name_step
from rescore.engine.spec import ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import GeneratorOptions, ModelRef
from rescore.models.synthetic import build_synthetic

SPEC = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=32))
CONFIG = NameConfig(num_latents=6, distance=3.0, chunk_size=6, batch_size=6, grids=1)


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    generator = build_synthetic()
    write_directions(sefa_directions(generator, "all", num=9), root)
    # A direction orthogonal to every factor direction moves no factor: it must stay unnamed.
    factors = generator.directions.numpy().astype(np.float64)  # [F, D]
    null = np.random.default_rng(0).standard_normal(generator.w_dim)
    null -= factors.T @ (factors @ null)
    save_boundary(root / "null", Boundary("null", (null / np.linalg.norm(null))[None]))
    paths = [directions_dir(root, "sefa"), root / "null"]
    naming = name_step(
        RunDirectory(root), BackendSpec("torch", "cpu"), CONFIG, paths, spec=SPEC, progress=False
    )
    return root, generator, naming


def test_sefa_and_naming_recover_every_factor_with_its_layer_group(named):
    root, generator, naming = named
    factors = generator.directions.numpy()
    found = {}
    for rank in range(9):
        vector = np.load(directions_dir(root, "sefa") / f"sefa_{rank}.npy")[0]
        alignment = factors @ vector  # [F]
        truth = generator.factor_names[int(np.argmax(np.abs(alignment)))]
        first = naming.named[f"sefa_{rank}"][0]
        assert first.semantic == truth
        # The sign: moving along sign * n increases the factor (the predictor reads it from pixels).
        assert (first.sign == "+") == (alignment[generator.factor_names.index(truth)] > 0)
        group = set(generator.factor_layers[truth])
        assert first.peak_layer in group and set(first.layers) <= group
        assert first.significant and min(abs(c) for c in first.contrast_ci) > 0
        assert (np.sign(first.contrast_ci) == np.sign(first.contrast)).all()  # CI excludes 0
        found[truth] = first
    assert sorted(found) == sorted(generator.factor_names)


def test_a_direction_that_moves_nothing_is_unnamed(named):
    root, _, naming = named
    assert naming.named["null"] == []
    assert abs(naming.strongest["null"].effect) < 1e-3
    rows = list(csv.DictReader(open(root / "names.csv")))
    assert tuple(rows[0]) == NAMES_COLUMNS
    null_rows = [r for r in rows if r["direction"] == "null"]
    assert len(null_rows) == 1 and null_rows[0]["semantic"] == "" and null_rows[0]["k"] == "6"


def test_names_outputs(named):
    root, _, naming = named
    record = json.loads((root / "names.json").read_text())
    assert record["format"] == "rescore.names" and record["distance"] == 3.0
    entry = record["directions"]["sefa_0"]
    assert entry["named"] and entry["effects"][0]["semantic"] == naming.named["sefa_0"][0].semantic
    assert len(entry["signed_effect"]) == len(record["semantics"])
    assert (root / "names.png").stat().st_size > 0
    assert len(list((root / "grids").glob("sefa_*.png"))) == 1


def test_layers_text_round_trips_the_layer_syntax():
    assert layers_text((2, 3, 4, 7)) == "2-4,7"
    assert layers_text((0,)) == "0" and layers_text(()) == ""


def test_name_without_directions_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(
        app, ["name", "-o", str(tmp_path), "--generator", "synthetic", "-p", "synthetic"]
    )
    assert result.exit_code == 2 and "rescore directions sefa" in result.stderr
