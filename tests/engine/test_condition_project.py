import numpy as np
from typer.testing import CliRunner

from rescore.engine.boundary import Boundary, load_boundary, save_boundary
from rescore.engine.cli import app

runner = CliRunner()


def _unit(rng, shape):
    v = rng.normal(size=shape)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_condition_command_on_three_conditions(tmp_path):
    rng = np.random.default_rng(0)
    bdir = tmp_path / "boundaries"
    names = ["primal", "a", "b", "c"]
    for name in names:
        save_boundary(bdir, Boundary(name, _unit(rng, (1, 16))))
    out = tmp_path / "cond"
    result = runner.invoke(
        app,
        [
            "condition",
            str(bdir / "primal.npy"),
            "--on",
            str(bdir / "a.npy"),
            "--on",
            str(bdir / "b.npy"),
            "--on",
            str(bdir / "c.npy"),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    conditioned = load_boundary(out / "primal.npy")
    assert conditioned.name == "primal"
    assert conditioned.metadata["conditioned_on"] == ["a", "b", "c"]
    assert np.isclose(np.linalg.norm(conditioned.normal), 1.0, atol=1e-6)
    for name in names[1:]:
        other = load_boundary(bdir / f"{name}.npy").normal
        assert abs(float(np.sum(conditioned.normal * other))) < 1e-6


def test_condition_errors(tmp_path):
    rng = np.random.default_rng(1)
    bdir = tmp_path / "b"
    primal = _unit(rng, (1, 8))
    save_boundary(bdir, Boundary("p", primal))
    save_boundary(bdir, Boundary("same", primal))
    save_boundary(bdir, Boundary("wide", _unit(rng, (1, 9))))
    result = runner.invoke(
        app,
        [
            "condition",
            str(bdir / "p.npy"),
            "--on",
            str(bdir / "same.npy"),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "span of the conditions" in result.stderr
    result = runner.invoke(
        app,
        [
            "condition",
            str(bdir / "p.npy"),
            "--on",
            str(bdir / "wide.npy"),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "shape" in result.stderr


def test_project_command_matches_direct_projection(tmp_path):
    out = str(tmp_path / "run")
    toy = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]
    assert (
        runner.invoke(
            app, ["sample", "-o", out, *toy, "-n", "60", "--chunk-size", "25", "-q"]
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            app, ["fit", "-o", out, "-s", "red", "-s", "blue", "--chosen-num", "15", "-q"]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["project", "-o", out])
    assert result.exit_code == 0, result.output
    import zarr

    projections = zarr.open_group(tmp_path / "run" / "projections.zarr", mode="r")
    samples = zarr.open_group(tmp_path / "run" / "samples.zarr", mode="r")
    w = samples["w"][:]
    for m, name in enumerate(projections.attrs["rescore"]["boundary_names"]):
        b = load_boundary(tmp_path / "run" / "boundaries" / f"{name}.npy")
        expected = w @ b.normal[0] + b.metadata["offset"]
        assert np.allclose(projections["distance"][:, m], expected, atol=1e-5)
    assert np.all(projections["ledger"][:] == 1)


def test_condition_needs_a_condition(tmp_path):
    result = runner.invoke(app, ["condition", str(tmp_path / "x.npy")])
    assert result.exit_code != 0 and "--on" in result.output
