"""Stores are data: they never make rescore run code, and what they record is honoured.

Also: damaged chunks are found by `rescore check` and recomputed to the undamaged result; a full
disk stops a writer cleanly and the rerun resumes; outputs are written atomically and leftovers of
killed writers are cleaned.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from faults import fill_disk_after
from typer.testing import CliRunner

from rescore.engine.atomic import clean_leftovers, write_text_atomic
from rescore.engine.cli import app

runner = CliRunner()
TOY = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]
CPU = ["--backend", "torch"]  # the reference backend: no graph export in these tests


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _fail(args: list[str], fragment: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert fragment in result.stderr, result.stderr
    return result.stderr


def _edit_sources(run: Path, edit) -> None:
    path = run / "samples.zarr" / "zarr.json"
    meta = json.loads(path.read_text())
    edit(meta["attributes"]["rescore"])
    path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A run of the built-in synthetic model (rebuildable from its store): samples + boundary."""
    root = tmp_path_factory.mktemp("synthetic") / "run"
    common = ["--generator", "synthetic", "-p", "synthetic", "--model-seed", "3", *CPU]
    _ok(["sample", "-o", str(root), *common, "--truncation-psi", "0.5", "-n", "40", "-q"])
    _ok(["fit", "-o", str(root), "-s", "lighting", "--chosen-num", "10", "-q"])
    return root


@pytest.mark.parametrize("field", ["generator", "predictor"])
@pytest.mark.parametrize("command", ["rescore", "grid"])
def test_a_store_naming_code_never_runs_it(synthetic_run, tmp_path, field, command):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    marker = tmp_path / "MARKER"
    payload = tmp_path / "payload.py"
    payload.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    evil = f"runpy:run_path={payload}"

    def edit(meta):
        if field == "generator":
            meta["sources"]["generator"] = evil
            meta["identity"]["generator"]["name"] = "runpy:run_path"  # identity edited to match
        else:
            meta["sources"]["predictors"] = [evil]
            meta["identity"]["predictors"][0]["name"] = "runpy:run_path"

    _edit_sources(run, edit)
    boundary = str(run / "boundaries" / "lighting.npy")
    args = {
        "rescore": ["rescore", "-o", str(run), "-n", "4", "-q", *CPU],
        "grid": ["grid", "-o", str(run), "-b", boundary, "-n", "1", "--steps", "2"],
    }[command]
    _fail(args, "never imports a module because a file names it")
    assert not marker.exists()
    system = "os:system=touch " + str(marker)
    _edit_sources(run, lambda meta: meta["sources"].update(generator=system))
    _fail(args, "name it again with --generator os:system")
    assert not marker.exists()


def test_override_keeps_the_recorded_generator_options(synthetic_run, tmp_path):
    """--generator on rescore replaces the model name, not the seed/psi the samples used."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    _ok(["rescore", "-o", str(run), "--generator", "synthetic", "-p", "synthetic", "-n", "4", *CPU])
    identity = zarr.open_group(run / "rescore.zarr", mode="r").attrs["rescore"]["identity"]
    assert identity["generator_options"]["seed"] == 3
    assert identity["generator_options"]["truncation_psi"] == 0.5
    plain = tmp_path / "plain"
    shutil.copytree(synthetic_run, plain)
    _ok(["rescore", "-o", str(plain), "-n", "4", "-q", *CPU])
    a = zarr.open_group(run / "rescore.zarr", mode="r")
    b = zarr.open_group(plain / "rescore.zarr", mode="r")
    assert np.array_equal(a["manipulated"][:], b["manipulated"][:], equal_nan=True)
    # an option given again replaces the recorded one
    other = tmp_path / "other"
    shutil.copytree(synthetic_run, other)
    _ok(["rescore", "-o", str(other), "--truncation-psi", "0.9", "-n", "4", "-q", *CPU])
    options = zarr.open_group(other / "rescore.zarr", mode="r").attrs["rescore"]["identity"]
    assert options["generator_options"]["truncation_psi"] == 0.9
    assert options["generator_options"]["seed"] == 3


def test_plugin_named_again_is_checked_against_the_store(tmp_path):
    run = tmp_path / "run"
    _ok(["sample", "-o", str(run), *TOY, *CPU, "-n", "20", "-q"])
    _ok(["fit", "-o", str(run), "-s", "red", "--chosen-num", "5", "-q"])
    _fail(["rescore", "-o", str(run), "-n", "4", "-q", *CPU], "--generator toy_models:build_toy")
    other = ["--generator", "synthetic", "-p", "toy_models:build_toy_predictor"]
    _fail(["rescore", "-o", str(run), *other, *CPU, "-n", "4", "-q"], "differ from the ones")
    _ok(["rescore", "-o", str(run), *TOY, *CPU, "-n", "4", "-q"])


def test_checkpoint_paths_are_recorded_absolute(tmp_path, monkeypatch):
    from rescore.engine.spec import ModelSpec
    from rescore.models.registry import ModelRef

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    spec = ModelSpec(ModelRef.parse("stylegan=w/g.pth"), (ModelRef.parse("places365=w"),))
    sources = spec.sources()
    assert sources["generator"] == f"stylegan={tmp_path / 'w' / 'g.pth'}"
    assert sources["predictors"] == [f"places365={tmp_path / 'w'}"]
    monkeypatch.chdir("/")
    assert ModelSpec.from_sources(sources).generator.path == tmp_path / "w" / "g.pth"


def test_projections_follow_a_refit_boundary(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    _ok(["project", "-o", str(run)])
    first = zarr.open_group(run / "projections.zarr", mode="r")["distance"][:]
    _ok(["fit", "-o", str(run), "-s", "lighting", "--chosen-num", "15", "-q"])  # a refit
    _ok(["project", "-o", str(run)])  # the old distances are replaced, not kept
    second = zarr.open_group(run / "projections.zarr", mode="r")["distance"][:]
    assert not np.allclose(first, second)


# ---- damage, check, recompute ----------------------------------------------------------------


def test_check_marks_damage_and_the_rerun_equals_an_undamaged_run(tmp_path):
    sample = ["sample", *TOY, *CPU, "-n", "40", "--chunk-size", "10", "-q"]
    rescore = ["rescore", *TOY, *CPU, "-n", "6", "--chunk-size", "2", "-q"]
    for name in ("clean", "damaged"):
        run = str(tmp_path / name)
        _ok([sample[0], "-o", run, *sample[1:]])
        _ok(["fit", "-o", run, "-s", "red", "--chosen-num", "10", "-q"])
        _ok([rescore[0], "-o", run, *rescore[1:]])
    damaged = tmp_path / "damaged"
    clean_out = _ok(["check", "-o", str(damaged)])
    assert "samples.zarr: ok, 4 chunk(s)" in clean_out
    (damaged / "samples.zarr" / "w" / "c" / "2" / "0").write_bytes(b"\x00" * 7)  # truncated
    (damaged / "samples.zarr" / "scores" / "c" / "1" / "0").unlink()  # deleted
    chunk = damaged / "rescore.zarr" / "manipulated" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one altered byte
    chunk.write_bytes(bytes(data))
    result = runner.invoke(app, ["check", "-o", str(damaged)])
    assert result.exit_code == 1, result.output
    assert "samples.zarr: 2 of 4 chunk(s) damaged (1, 2)" in result.output
    assert "rescore.zarr: 1 of 3 chunk(s) damaged (1)" in result.output
    _ok([sample[0], "-o", str(damaged), *sample[1:]])
    _ok([rescore[0], "-o", str(damaged), *rescore[1:]])
    assert "damaged" not in _ok(["check", "-o", str(damaged)])
    _ok(["report", "-o", str(damaged)])  # statistics recomputed in chunk order
    for store in ("samples.zarr", "rescore.zarr"):
        clean = zarr.open_group(tmp_path / "clean" / store, mode="r")
        fixed = zarr.open_group(damaged / store, mode="r")
        for name in clean.array_keys():
            assert np.array_equal(clean[name][:], fixed[name][:], equal_nan=True), (store, name)
    clean_csv = (tmp_path / "clean" / "rescore.csv").read_text()
    assert (damaged / "rescore.csv").read_text() == clean_csv


def test_arrays_carry_crc32c_and_the_format_version_is_2(tmp_path):
    _ok(["sample", "-o", str(tmp_path / "r"), *TOY, *CPU, "-n", "8", "-q"])
    group = zarr.open_group(tmp_path / "r" / "samples.zarr", mode="r")
    assert group.attrs["rescore"]["format_version"] == 2
    for name in group.array_keys():
        codecs = [c["name"] for c in group[name].metadata.to_dict()["codecs"]]
        assert codecs[-1] == "crc32c", (name, codecs)


def test_a_full_disk_stops_cleanly_and_the_rerun_resumes(tmp_path, monkeypatch):
    args = ["sample", "-o", str(tmp_path / "r"), *TOY, *CPU, "-n", "40", "--chunk-size", "10", "-q"]
    fill_disk_after(monkeypatch, "scores", 2)  # two chunks of scores fit, then the disk is full
    stderr = _fail(args, "No space left on device")
    assert "free disk space and rerun the same command" in stderr
    monkeypatch.undo()
    ledger = zarr.open_group(tmp_path / "r" / "samples.zarr", mode="r")["ledger"][:]
    assert ledger.tolist() == [1, 1, 0, 0]  # two chunks finished before the disk filled
    _ok(args)
    _ok(["sample", "-o", str(tmp_path / "ref"), *args[3:]])
    resumed = zarr.open_group(tmp_path / "r" / "samples.zarr", mode="r")
    reference = zarr.open_group(tmp_path / "ref" / "samples.zarr", mode="r")
    for name in ("z", "w", "scores"):
        assert np.array_equal(resumed[name][:], reference[name][:])


# ---- atomic outputs and leftovers ------------------------------------------------------------


def test_report_rewrites_the_table_and_leftovers_are_cleaned(tmp_path):
    run = tmp_path / "run"
    _ok(["sample", "-o", str(run), *TOY, *CPU, "-n", "20", "-q"])
    _ok(["fit", "-o", str(run), "-s", "red", "--chosen-num", "5", "-q"])
    _ok(["rescore", "-o", str(run), *TOY, "-n", "4", "-q"])
    table, summary = (run / "rescore.csv").read_text(), (run / "summary.json").read_text()
    (run / "rescore.csv").write_text(table[: len(table) // 2])  # a kill while writing
    (run / "summary.json").write_text("{")
    leftovers = [
        run / ".samples.zarr.0badcafe.partial",
        run / ".summary.1234abcd.tmp.json",
        run / "boundaries" / ".red.npy.deadbeef.tmp",
    ]
    leftovers[0].mkdir()
    for path in leftovers[1:]:
        path.write_bytes(b"half")
    fresh = run / ".rescore.99999999.tmp.csv"  # a writer still running: too young to remove
    fresh.write_bytes(b"")
    old = time.time() - 3600
    for path in leftovers:
        os.utime(path, (old, old))
    _ok(["report", "-o", str(run)])
    assert (run / "rescore.csv").read_text() == table
    assert json.loads((run / "summary.json").read_text()) == json.loads(summary)
    assert not any(p.exists() for p in leftovers) and fresh.exists()


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    write_text_atomic(target, "old")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    assert clean_leftovers(tmp_path) == []


def test_a_failed_first_command_leaves_no_run_directory(tmp_path):
    out = tmp_path / "a" / "b"
    _fail(["sample", "-o", str(out), "--generator", "synthetic", "-p", "nope", "-q"], "unknown")
    assert not (tmp_path / "a").exists()
    _fail(["fit", "-o", str(out), "-q"], "not found")
    assert not (tmp_path / "a").exists()


def test_cache_leftovers_of_killed_exports_are_cleaned(tmp_path):
    from rescore.export.cache import clean_cache_leftovers

    scratch = tmp_path / "onnx" / "0123abcd" / ".export-k1ll3d"
    scratch.mkdir(parents=True)
    (scratch / "fused.onnx").write_bytes(b"half")
    engine = tmp_path / "engines" / ".e.engine.42.tmp"
    engine.parent.mkdir()
    engine.write_bytes(b"half")
    kept = tmp_path / "onnx" / "0123abcd" / "fused.onnx"
    kept.write_bytes(b"a finished graph")
    old = time.time() - 3600
    for path in (scratch, engine):
        os.utime(path, (old, old))
    clean_cache_leftovers(tmp_path)
    assert not scratch.exists() and not engine.exists() and kept.exists()
