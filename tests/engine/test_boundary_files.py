"""The boundary files users hold: spaces (Z/W/W+), names, HiGAN lists and meta_data, bad input."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.engine.boundary import (
    Boundary,
    check_family,
    check_store,
    load_boundaries,
    load_boundary,
    parse_boundary_argument,
    save_boundary,
)
from rescore.engine.cli import app
from rescore.engine.errors import BoundaryError
from rescore.export.geometry import LatentGeometry

runner = CliRunner()
TOY = [
    "--generator",
    "toy_models:build_toy_generator",
    "-p",
    "toy_models:build_toy_predictor",
    "--backend",
    "torch",
]


MODELS = TOY[:4]  # a plug-in recorded in a store is named again (the store never imports it)


def _unit(shape, seed=0):
    normal = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def _fails(args, match):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rescore: error: "), result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("file", "semantic"),
    [
        ("boundary_Smiling.npy", "Smiling"),  # InterFaceGAN++
        ("wood_boundary.npy", "wood"),  # HiGAN
        ("indoor_lighting.npy", "indoor_lighting"),  # rescore without sidecar
    ],
)
def test_semantic_names_of_published_files(tmp_path, file, semantic):
    np.save(tmp_path / file, _unit((1, 4)))
    assert load_boundary(tmp_path / file).name == semantic


# ----------------------------------------------------------------------------------------------
# Spaces


def test_space_from_argument_sidecar_and_higan_boundary_list(tmp_path):
    np.save(tmp_path / "wood_boundary.npy", _unit((1, 4)))
    assert parse_boundary_argument(f"{tmp_path}/wood_boundary.npy:z") == (
        tmp_path / "wood_boundary.npy",
        "z",
    )
    assert load_boundary(tmp_path / "wood_boundary.npy").space == "w"
    assert load_boundaries([f"{tmp_path / 'wood_boundary.npy'}:z"])[0].space == "z"

    saved = save_boundary(tmp_path / "fitted", Boundary("carpet", _unit((1, 4), 1), space="z"))
    assert json.loads(saved.with_suffix(".json").read_text())["space"] == "z"
    assert load_boundary(saved).space == "z"

    listing = tmp_path / "boundary_list.txt"
    listing.write_text(
        "(glossy, z): wood_boundary.npy\n"
        f"(carpet, z): {saved}\n"
        "DISABLE(view, wp): missing_boundary.npy\n"
    )
    loaded = load_boundaries([listing])
    assert [(b.name, b.space) for b in loaded] == [("glossy", "z"), ("carpet", "z")]


@pytest.mark.parametrize(
    "relative",
    [
        "stylegan_ffhq_age_boundary.npy",  # InterFaceGAN: no `_w` -> Z
        "pggan_celebahq_smile_boundary.npy",  # PGGAN: Z
        "stylegan_celebahq_age_c_gender_boundary.npy",  # conditioned, Z
        "attributes_z/smile_boundary.npy",  # a `*_z` directory
    ],
)
def test_a_file_named_as_z_is_never_taken_as_w_silently(tmp_path, relative):
    path = tmp_path / relative
    path.parent.mkdir(exist_ok=True)
    np.save(path, _unit((1, 4)))
    with pytest.raises(BoundaryError, match=r"named like a Z-space boundary.*:z"):
        load_boundary(path)
    assert load_boundary(path, "z").space == "z"
    assert load_boundary(path, "w").space == "w"  # the user said so


def test_interfacegan_w_files_are_w(tmp_path):
    np.save(tmp_path / "stylegan_ffhq_age_w_boundary.npy", _unit((1, 4)))
    assert load_boundary(tmp_path / "stylegan_ffhq_age_w_boundary.npy").space == "w"


def test_sidecar_space_contradicted_by_the_user_is_refused(tmp_path):
    saved = save_boundary(tmp_path, Boundary("carpet", _unit((1, 4)), space="z"))
    with pytest.raises(BoundaryError, match=r"fitted in Z space .* used as W"):
        load_boundary(saved, "w")


def test_z_boundaries_fit_the_z_dimension_and_have_no_wp_displacement():
    geometry = LatentGeometry(3, 4, 2, np.zeros(4, np.float32), np.ones(2, np.float32))
    z_boundary = Boundary("a", _unit((1, 3)), space="z")
    assert not z_boundary.layer_wise
    assert np.array_equal(z_boundary.directions(geometry), np.zeros((2, 4), np.float32))
    with pytest.raises(BoundaryError, match="Z space has 3"):
        Boundary("a", _unit((1, 4)), space="z").directions(geometry)
    with pytest.raises(BoundaryError, match="cannot be a 'wp' boundary"):
        Boundary("a", _unit((1, 4)), space="wp")


# ----------------------------------------------------------------------------------------------
# HiGAN's pickled-dict variant and its recommended layers


def test_higan_meta_data_manipulate_layers_is_kept(tmp_path):
    normal = _unit((1, 4))
    np.save(
        tmp_path / "indoor_lighting_boundary.npy",
        {"boundary": normal, "meta_data": {"type": "attribute", "manipulate_layers": "6-11"}},
        allow_pickle=True,
    )
    loaded = load_boundary(tmp_path / "indoor_lighting_boundary.npy")
    assert loaded.name == "indoor_lighting" and loaded.manipulate_layers == "6-11"
    assert np.allclose(loaded.normal, normal)
    assert load_boundary(save_boundary(tmp_path / "copy", loaded)).manipulate_layers == "6-11"


# ----------------------------------------------------------------------------------------------
# Family and samples store


def test_boundaries_of_another_family_are_refused_unless_forced():
    foreign = Boundary("wood", _unit((1, 4)), {"family": "stylegan2"})
    legacy = Boundary("carpet", _unit((1, 4)))  # a HiGAN file: no family recorded
    assert foreign.family == "stylegan2" and legacy.family is None
    with pytest.raises(BoundaryError, match=r"wood \(stylegan2\).*--force-family"):
        check_family([foreign, legacy], "stylegan")
    check_family([foreign, legacy], "stylegan", force=True)
    check_family([foreign, legacy], "stylegan2")
    check_family([foreign], "stylegan", alias="stylegan2")  # a plug-in answering to both
    check_family([foreign], None)  # a model of unknown family
    fitted = Boundary("x", _unit((1, 4)), {"model": {"generator": {"name": "stylegan"}}})
    assert fitted.family == "stylegan"


def test_boundaries_of_another_samples_store_are_refused_unless_forced():
    fitted = Boundary("wood", _unit((1, 4)), {"store": {"path": "a", "identity_sha256": "1" * 64}})
    check_store([fitted], "1" * 64)
    with pytest.raises(BoundaryError, match="another samples store.*--force-store"):
        check_store([fitted], "2" * 64)
    check_store([fitted], "2" * 64, force=True)


# ----------------------------------------------------------------------------------------------
# Bad input: one line, exit 2


def _write_bad(path, kind):
    if kind == "npz":
        np.savez(path.with_suffix(".tmp"), boundary=_unit((1, 6)))
        path.with_suffix(".tmp.npz").rename(path)
    elif kind == "string":
        np.save(path, np.array([["a", "b", "c", "d", "e", "f"]]))
    elif kind == "integer":
        np.save(path, np.ones((1, 6), np.int64))
    elif kind == "complex":
        np.save(path, _unit((1, 6)).astype(np.complex64))
    elif kind == "bool":
        np.save(path, np.ones((1, 6), bool))


BAD_BOUNDARIES = {
    "npz": "npz archive",
    "string": "<U1 array",
    "integer": "int64 array",
    "complex": "complex64 array",
    "bool": "bool array",
}


@pytest.mark.parametrize("kind", sorted(BAD_BOUNDARIES))
def test_bad_boundary_arrays_are_one_line_errors(tmp_path, kind):
    path = tmp_path / "red_boundary.npy"
    _write_bad(path, kind)
    with pytest.raises(BoundaryError, match=BAD_BOUNDARIES[kind]):
        load_boundary(path)
    _fails(["condition", str(path), "--on", str(path)], BAD_BOUNDARIES[kind])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    args = ["run", "-o", str(out), *TOY, "-n", "120", "--chosen-num", "20", "-s", "red"]
    result = runner.invoke(app, [*args, "--rescore-num", "6", "-q"])
    assert result.exit_code == 0, result.output
    return out


def _fresh(run, tmp_path):
    """A copy of the run's samples store and boundaries, without its rescore store."""
    copy = tmp_path / "copy"
    for name in ("samples.zarr", "boundaries"):
        shutil.copytree(run / name, copy / name)
    return copy


def test_bad_boundaries_through_every_command(toy_run, tmp_path):
    bad = tmp_path / "red_boundary.npy"
    _write_bad(bad, "npz")
    commands = (["rescore", *MODELS, "-n", "4", "--backend", "torch", "-q"], ["project"])
    for command in (*commands, ["grid", *MODELS]):
        _fails([command[0], "-o", str(toy_run), "-b", str(bad), *command[1:]], "npz archive")
    wide = tmp_path / "wide.npy"
    np.save(wide, _unit((1, 7)))
    _fails(["project", "-o", str(toy_run), "-b", str(wide)], "shape (1, 7)")
    np.save(tmp_path / "layers.npy", _unit((1, 9, 7)))
    _fails(["project", "-o", str(toy_run), "-b", str(tmp_path / "layers.npy")], "shape (1, 9, 7)")
    np.save(tmp_path / "z.npy", _unit((1, 5)))
    _fails(["project", "-o", str(toy_run), "-b", f"{tmp_path / 'z.npy'}:z"], "shape (1, 5)")


def test_boundaries_of_another_store_through_the_cli(toy_run, tmp_path):
    other = tmp_path / "other"
    args = ["sample", "-o", str(other), *TOY, "-n", "40", "--seed", "1"]
    assert runner.invoke(app, [*args, "-q"]).exit_code == 0
    fitted = str(toy_run / "boundaries")
    _fails(
        ["rescore", "-o", str(other), *MODELS, "-b", fitted, "-n", "4", "--backend", "torch", "-q"],
        "--force-store",
    )
    _fails(["project", "-o", str(other), "-b", fitted], "--force-store")
    _fails(["grid", "-o", str(other), *MODELS, "-b", f"{fitted}/red.npy"], "--force-store")
    forced = runner.invoke(app, ["project", "-o", str(other), "-b", fitted, "--force-store"])
    assert forced.exit_code == 0, forced.output


def test_boundaries_of_another_family_through_the_cli(toy_run, tmp_path):
    sidecar = json.loads((toy_run / "boundaries" / "red.json").read_text())
    assert sidecar["family"] == "toy_models:build_toy_generator" and sidecar["space"] == "w"
    foreign = save_boundary(
        tmp_path / "sg2", Boundary("red", _unit((1, 6)), {"family": "stylegan2"})
    )
    run = str(_fresh(toy_run, tmp_path))
    _fails(
        ["rescore", "-o", run, *MODELS, "-b", str(foreign), "-n", "4", "--backend", "torch", "-q"],
        "--force-family",
    )
    result = runner.invoke(
        app,
        [
            "rescore",
            "-o",
            run,
            *MODELS,
            "-b",
            str(foreign),
            "-n",
            "4",
            "--backend",
            "torch",
            "-q",
            "--force-family",
        ],
    )
    assert result.exit_code == 0, result.output


def test_no_matching_boundary_is_said_in_one_line(toy_run, tmp_path):
    np.save(tmp_path / "sky_boundary.npy", _unit((1, 6)))
    run = str(_fresh(toy_run, tmp_path))
    result = runner.invoke(
        app,
        [
            "rescore",
            "-o",
            run,
            *MODELS,
            "-b",
            str(tmp_path / "sky_boundary.npy"),
            "-n",
            "4",
            "--backend",
            "torch",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no boundary is named after a scored semantic (boundaries: sky)" in result.output
    assert "delta(all)" not in result.output


def test_no_boundaries_line_when_the_directory_does_not_exist(toy_run, tmp_path):
    out = tmp_path / "elsewhere"
    assert runner.invoke(app, ["sample", "-o", str(out), *TOY, "-n", "20", "-q"]).exit_code == 0
    np.save(tmp_path / "red_boundary.npy", _unit((1, 6)))
    result = runner.invoke(
        app,
        [
            "rescore",
            "-o",
            str(out),
            *MODELS,
            "-b",
            str(tmp_path / "red_boundary.npy"),
            "-n",
            "4",
            "--backend",
            "torch",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "boundaries:" not in result.output
    report = runner.invoke(app, ["report", "-o", str(toy_run)])
    assert f"boundaries: {toy_run / 'boundaries'}" in report.output


def test_project_measures_z_boundaries_against_z(toy_run, tmp_path):
    import zarr

    run = _fresh(toy_run, tmp_path)
    normal = _unit((1, 6), 3)
    np.save(tmp_path / "pggan_toy_red_boundary.npy", normal)  # a Z file by its name
    _fails(["project", "-o", str(run), "-b", str(tmp_path / "pggan_toy_red_boundary.npy")], ":z")
    result = runner.invoke(
        app, ["project", "-o", str(run), "-b", f"{tmp_path / 'pggan_toy_red_boundary.npy'}:z"]
    )
    assert result.exit_code == 0, result.output
    group = zarr.open_group(run / "projections.zarr", mode="r")
    z = zarr.open_group(run / "samples.zarr", mode="r")["z"][:]
    np.testing.assert_allclose(group["distance_z"][:], z @ normal.T, rtol=1e-5, atol=1e-5)
    assert group.attrs["rescore"]["boundary_z_names"] == ["pggan_toy_red"]


@pytest.mark.parametrize(
    ("relative", "family"),
    [
        ("stylegan2_church/clouds_boundary.npy", "stylegan2"),  # HiGAN's directories
        ("stylegan_bedroom/wood_boundary.npy", "stylegan"),
        ("pggan_celebahq_smile_boundary.npy:z", "pggan"),  # InterFaceGAN's file names
        ("stylegan_ffhq_age_w_boundary.npy", "stylegan"),
        ("mine/wood_boundary.npy", None),
    ],
)
def test_published_files_know_their_family(tmp_path, relative, family):
    file, _, space = relative.partition(":")
    (tmp_path / file).parent.mkdir(exist_ok=True)
    np.save(tmp_path / file, _unit((1, 4)))
    loaded = load_boundaries([tmp_path / relative])[0]
    assert loaded.family == family
    if family:
        check_family([loaded], family)
        with pytest.raises(BoundaryError, match="--force-family"):
            check_family([loaded], "biggan")


def test_a_failed_first_command_leaves_no_empty_run_directory(tmp_path):
    out = tmp_path / "runs" / "first"
    _fails(["sample", "-o", str(out), "--generator", "toy_models:none", "-p", "color"], "none")
    assert not (tmp_path / "runs").exists()
    np.save(tmp_path / "red_boundary.npy", _unit((1, 6)))
    _fails(["project", "-o", str(out), "-b", str(tmp_path / "red_boundary.npy")], "not found")
    assert not (tmp_path / "runs").exists()


def test_manipulate_layers_drive_grid_and_summary(toy_run, tmp_path):
    normal = _unit((1, 6), 5)
    higan = tmp_path / "red_boundary.npy"
    np.save(
        higan, {"boundary": normal, "meta_data": {"manipulate_layers": "1-2"}}, allow_pickle=True
    )
    run = _fresh(toy_run, tmp_path)
    grid = runner.invoke(
        app, ["grid", "-o", str(run), *MODELS, "-b", str(higan), "-n", "1", "--steps", "3"]
    )
    assert grid.exit_code == 0, grid.output
    assert (run / "grids" / "red_layers-1-2.png").is_file()
    result = runner.invoke(
        app,
        [
            "rescore",
            "-o",
            str(run),
            *MODELS,
            "-b",
            str(higan),
            "-n",
            "4",
            "--backend",
            "torch",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["boundaries"]["red"]["manipulate_layers"] == "1-2"
    assert summary["boundaries"]["red"]["space"] == "w"
