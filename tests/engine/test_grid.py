import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rescore.engine.cli import app
from rescore.engine.errors import BoundaryError
from rescore.engine.grid import parse_layers

runner = CliRunner()


def test_parse_layers():
    assert parse_layers("all", 4).all()
    assert parse_layers("0,2-3", 5).tolist() == [True, False, True, True, False]
    for bad in ("x", "3-1", "7", "1-9", ""):
        with pytest.raises(BoundaryError):
            parse_layers(bad, 5)


def test_grid_renders_rows_of_latents_and_columns_of_distances(tmp_path):
    out = str(tmp_path / "run")
    toy = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]
    assert runner.invoke(app, ["sample", "-o", out, *toy, "-n", "60", "-q"]).exit_code == 0
    assert (
        runner.invoke(app, ["fit", "-o", out, "-s", "red", "--chosen-num", "15", "-q"]).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "grid",
            "-o",
            out,
            *toy,
            "-b",
            f"{out}/boundaries/red.npy",
            "--layers",
            "0",
            "-n",
            "3",
            "--steps",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(tmp_path / "run" / "grids" / "red_layers-0.png"))
    assert image.shape == (3 * 8, 5 * 8, 3)
    red = image[::8, ::8, 0].astype(int)  # one pixel per cell: [rows, steps]
    assert np.all(np.diff(red, axis=1) >= 0) and np.all(red[:, -1] > red[:, 0])
    assert np.array_equal(image[::8, ::8, 1], image[::8, :8:8, 1].repeat(5, axis=1))
