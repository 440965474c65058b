"""The table of bad-input classes and what each gets: one line `rescore: error: ...`, exit 2,
and no store of the run changed.

Every row runs one command against a copy of a finished toy run (samples, boundaries, rescore).
To add a class: append a `Row` to `ROWS` with the CLI arguments (placeholders: {run} the run
directory, {tmp} a scratch directory, {red} the run's `red` boundary, {onnx} a directory of
exported toy graphs, {toy} the toy generator and predictor options), the fragment the message must
contain, and optionally a `setup(tmp, monkeypatch)` that breaks something first (what setup
changes in a store is the baseline: the command must not change it further).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rescore.engine.cli import app

runner = CliRunner()
TOY = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]


@dataclass(frozen=True)
class Row:
    id: str
    args: list[str]
    expect: str
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    needs_onnx: bool = False


# ---- setups: each breaks one thing -----------------------------------------------------------


def _edit_attrs(store: str, edit: Callable[[dict], None]) -> Callable:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp / "run" / store / "zarr.json"
        meta = json.loads(path.read_text())
        edit(meta["attributes"]["rescore"])
        path.write_text(json.dumps(meta))

    return setup


def _overwrite(relative: str, data: bytes | Callable[[bytes], bytes]) -> Callable:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp / "run" / relative
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)

    return setup


def _deny(target: str, code: int = errno.EROFS, under: str = "") -> Callable:
    """Make `target` (e.g. 'os.replace') fail as on a read-only file system or a full disk, for
    paths containing `under` (all paths by default)."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        original = _resolve(target)

        def refuse(*args, **kwargs):
            if under not in str(args[0]):
                return original(*args, **kwargs)
            raise OSError(code, os.strerror(code), str(args[0]))

        monkeypatch.setattr(target, refuse)

    return setup


def _resolve(target: str):
    module, _, attribute = target.rpartition(".")
    owner, _, cls = module.rpartition(".")
    import importlib

    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError:
        return getattr(getattr(importlib.import_module(owner), cls), attribute)


def _file(name: str) -> Callable:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / name).write_text("x")

    return setup


def _edit_sidecar(name: str, edit: Callable[[dict], None]) -> Callable:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp / "onnx" / f"{name}.json"
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))

    return setup


def _lse_file(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LinearGAN predictor (reads generator features) fitted on the synthetic generator."""
    from rescore.models.lineargan import fit_lse_file
    from rescore.models.registry import ModelRef, build_generator

    fit_lse_file(build_generator(ModelRef("synthetic")), tmp / "lse.npz", layers=[0], num_images=2)


def _swap_graph(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = tmp / "onnx"
    for suffix in (".onnx", ".json"):
        shutil.copy(onnx / f"mapping{suffix}", onnx / f"fused{suffix}")


def _no_aws_credentials(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "none"))


CPU = ["--backend", "torch"]  # the reference backend: no graph export where none is tested
SAMPLE = ["sample", "-o", "{tmp}/new", "-n", "8", "--chunk-size", "8", "-q"]
RESCORE = ["rescore", "-o", "{run}", *TOY, "-q"]
FIT = ["fit", "-o", "{run}", "--chosen-num", "10", "-q"]
# an S3 endpoint nobody listens on, asked once (no retries); {{ }}: literal braces
NOWHERE = [
    "--storage-option",
    "endpoint_url=http://127.0.0.1:9",
    "--storage-option",
    'config_kwargs={{"retries": {{"max_attempts": 1}}}}',
]
KEYS = ["--storage-option", "key=testing", "--storage-option", "secret=testing"]
ROWS = [
    # --out as an object-store URL (test_object_store.py runs the real protocol)
    Row("url-protocol", ["report", "-o", "nosuch://bucket/run"], "unknown storage protocol"),
    Row("url-backend-missing", ["report", "-o", "oci://bucket/run"], "needs ocifs"),
    Row("url-no-bucket", ["report", "-o", "s3://"], "names no bucket"),
    Row(
        "url-unreachable",
        ["sample", "-o", "s3://bucket/run", *TOY, *NOWHERE, *KEYS, "-q"],
        "EndpointConnectionError",
    ),
    Row(
        "url-no-credentials",
        ["report", "-o", "s3://bucket/run", *NOWHERE],
        "NoCredentialsError",
        _no_aws_credentials,
    ),
    Row(
        "url-local-only-command",
        ["grid", "-o", "s3://bucket/run", *TOY, "-b", "{red}"],
        "rescore grid writes to a local directory",
    ),
    Row("url-directions", ["directions", "pca", "-o", "s3://b/run"], "writes to a local directory"),
    Row("storage-option-local", [*SAMPLE, *TOY, "--storage-option", "anon=true"], "URLs, not"),
    Row(
        "storage-option-malformed",
        ["report", "-o", "s3://bucket/run", "--storage-option", "anon"],
        "is not KEY=VALUE",
    ),
    # numbers that make no sense
    Row("distance-nan", [*RESCORE, "--distance", "nan"], "--distance must be a finite"),
    Row("distance-inf", [*RESCORE, "--distance", "inf"], "--distance must be a finite"),
    Row("k-1", [*RESCORE, "-n", "1"], "K >= 2"),
    Row("max-k-1", [*RESCORE, "--target-ci", "0.1", "--max-k", "1"], "K >= 2"),
    Row(
        "eliminate-with-target-ci",
        [*RESCORE, "--eliminate", "--target-ci", "0.1"],
        "--eliminate cannot be combined with --target-ci",
    ),
    Row(
        "eliminate-unknown-semantic",
        [*RESCORE, "--eliminate", "--eliminate-semantic", "nope"],
        "is not a scored semantic",
    ),
    Row(
        "eliminate-tie-negative",
        [*RESCORE, "--eliminate", "--eliminate-tie", "-1"],
        "--eliminate-tie must be >= 0",
    ),
    Row("eliminate-tie-alone", [*RESCORE, "--eliminate-tie", "0.1"], "need --eliminate"),
    Row(
        "eliminate-paired-tie",
        [*RESCORE, "--eliminate", "--eliminate-paired", "--eliminate-tie", "0.1"],
        "--eliminate-tie needs the per-layer sequences",
    ),
    Row("psi-nan", [*SAMPLE, *TOY, "--truncation-psi", "nan"], "--truncation-psi must be"),
    Row("run-k-1", ["run", "-o", "{tmp}/new", *TOY, "--rescore-num", "1"], "K >= 2"),
    Row("executor-unknown", [*SAMPLE, *TOY, *CPU, "--executor", "slurm"], "use local or ray"),
    Row("workers-0", [*SAMPLE, *TOY, *CPU, "--executor", "ray", "--workers", "0"], "--workers"),
    Row("grid-num-0", ["grid", "-o", "{run}", *TOY, "-b", "{red}", "-n", "0"], "--num must be"),
    Row("grid-steps-0", ["grid", "-o", "{run}", *TOY, "-b", "{red}", "--steps", "0"], "--steps"),
    Row(
        "grid-distance-nan",
        ["grid", "-o", "{run}", *TOY, "-b", "{red}", "--distance", "nan"],
        "--distance must be a finite",
    ),
    # condition
    Row("condition-no-on", ["condition", "{red}"], "pass --on"),
    Row(
        "condition-output-file",
        ["condition", "{red}", "--on", "{red}", "--output", "{tmp}/f"],
        "is a file",
        _file("f"),
    ),
    # backends
    Row(
        "onnx-dir-with-torch",
        [*SAMPLE, *TOY, "--backend", "torch", "--onnx-dir", "{tmp}"],
        "--onnx-dir needs a compiled backend",
    ),
    Row(
        "rescore-onnx-dir-with-torch",
        [*RESCORE, "--backend", "torch", "--onnx-dir", "{tmp}"],
        "--onnx-dir needs a compiled backend",
    ),
    # plug-ins that do not work
    Row(
        "generator-none",
        [*SAMPLE, "--generator", "bad_plugins:returns_none", "-p", "color"],
        "returned NoneType, not a torch.nn.Module",
    ),
    Row(
        "generator-text",
        [*SAMPLE, "--generator", "bad_plugins:returns_text", "-p", "color"],
        "returned str, not a torch.nn.Module",
    ),
    Row(
        "generator-raises",
        [*SAMPLE, "--generator", "bad_plugins:raises", "-p", "color"],
        "factory 'bad_plugins:raises' raised ValueError",
    ),
    Row(
        "predictor-none",
        [*SAMPLE, "--generator", "synthetic", "-p", "bad_plugins:returns_none"],
        "returned NoneType",
    ),
    Row(
        "predictor-wrong-shape",
        [*SAMPLE, TOY[0], TOY[1], "-p", "bad_plugins:wrong_shape_predictor"],
        "returned shape (2, 2), expected [2, 4]",
    ),
    Row(
        "predictor-raises",
        [*SAMPLE, TOY[0], TOY[1], "-p", "bad_plugins:raising_predictor"],
        "failed on a test batch of 2 images (RuntimeError",
    ),
    Row(
        "generator-wrong-shape",
        [*SAMPLE, "--generator", "bad_plugins:wrong_shape_generator", TOY[2], TOY[3]],
        "map(z) returned shape (2, 3)",
    ),
    Row(
        "predictor-nan-column",
        [*SAMPLE, *CPU, TOY[0], TOY[1], "-p", "bad_plugins:nan_column_predictor"],
        "only NaN/inf for semantic(s) blue",
    ),
    Row(
        "module-missing",
        [*SAMPLE, "--generator", "no_such_module:f", "-p", "color"],
        "cannot import module",
    ),
    # a plug-in recorded in a store is never imported from the store
    Row("recorded-plugin", ["rescore", "-o", "{run}", "-q"], "name it again with --generator"),
    Row("recorded-plugin-grid", ["grid", "-o", "{run}", "-b", "{red}"], "name it again"),
    # damaged or hand-edited stores
    Row(
        "attrs-missing-key",
        ["fit", "-o", "{run}", "-q"],
        "'num_samples' is missing",
        _edit_attrs("samples.zarr", lambda m: m.pop("num_samples")),
    ),
    Row(
        "attrs-wrong-type",
        ["fit", "-o", "{run}", "-q"],
        "'chunk_size' is missing or not int",
        _edit_attrs("samples.zarr", lambda m: m.update(chunk_size="20")),
    ),
    Row(
        "sources-unknown-option",
        [*RESCORE],
        "unknown keys ['evil']",
        _edit_attrs("samples.zarr", lambda m: m["sources"]["generator_options"].update(evil=1)),
    ),
    Row(
        "sources-missing",
        [*RESCORE],
        "'sources' record is missing",
        _edit_attrs("samples.zarr", lambda m: m.pop("sources")),
    ),
    Row(
        "array-zarr-json",
        ["fit", "-o", "{run}", "-q"],
        "the metadata of an array is unreadable",
        _overwrite("samples.zarr/scores/zarr.json", b"{garbage"),
    ),
    Row(
        "ledger-garbage",
        ["fit", "-o", "{run}", "-q"],
        "array 'ledger' is damaged in chunk 1",
        _overwrite("samples.zarr/ledger/c/1", b"garbage bytes"),
    ),
    Row(
        "chunk-garbage",
        FIT,
        "array 'scores' is damaged in chunk 1 (",
        _overwrite("samples.zarr/scores/c/1/0", b"\x28\xb5\x2f\xfd garbage"),
    ),
    Row(
        "chunk-truncated",
        FIT,
        "array 'scores' is damaged in chunk 0 (",
        _overwrite("samples.zarr/scores/c/0/0", lambda b: b[: len(b) // 2]),
    ),
    Row(
        "chunk-deleted",
        ["fit", "-o", "{run}", "-q"],
        "chunk files of 1 completed unit(s)",
        lambda tmp, mp: (tmp / "run/samples.zarr/scores/c/1/0").unlink(),
    ),
    Row(
        "rescore-chunk-garbage",
        ["report", "-o", "{run}"],
        "rescore.zarr: array 'original' is damaged in chunk 0",
        _overwrite("rescore.zarr/original/c/0/0", b"garbage"),
    ),
    # read-only outputs and full disks
    Row(
        "report-read-only",
        ["report", "-o", "{run}"],
        "cannot write",
        _deny("pathlib.Path.write_bytes"),
    ),
    Row(
        "condition-read-only",
        ["condition", "{red}", "--on", "{green}", "--output", "{tmp}/c"],
        "Read-only file system",
        _deny("os.replace"),
    ),
    Row(
        "cache-dir-read-only",
        [*SAMPLE, *TOY, "--backend", "onnxruntime", "--cache-dir", "{tmp}/cache"],
        "cache/onnx",
        _deny("pathlib.Path.mkdir", under="/cache"),
    ),
    Row(
        "export-read-only",
        ["export", "-o", "{tmp}/ro/onnx", *TOY, "--part", "mapping"],
        "ro/onnx (Read-only file system)",
        _deny("pathlib.Path.mkdir", under="/ro/"),
    ),
    Row(
        "rescore-disk-full",
        ["rescore", "-o", "{tmp}/new", *TOY, *CPU, "-b", "{red}", "-n", "4", "-q"],
        "No space left on device",
        _deny("zarr.storage.LocalStore.set", errno.ENOSPC),
    ),
    Row(
        "fit-disk-full",
        ["fit", "-o", "{tmp}/run", "-s", "green", "--chosen-num", "10", "-q"],
        "no space left",
        _deny("os.replace", errno.ENOSPC),
    ),
    Row(
        "export-feature-reader-alone",
        ["export", "-o", "{tmp}/new", "--generator", "synthetic", "-p", "lineargan={tmp}/lse.npz"]
        + ["--part", "predictors"],
        "cannot be exported alone; export them inside the fused pass",
        _lse_file,
    ),
    # ONNX files from `rescore export` that do not fit
    Row(
        "sidecar-missing-key",
        [*SAMPLE, *TOY, "--backend", "onnxruntime", "--onnx-dir", "{onnx}"],
        "lacks onnx_sha256",
        _edit_sidecar("fused", lambda m: m.pop("onnx_sha256")),
        True,
    ),
    Row(
        "sidecar-input-name",
        [*SAMPLE, *TOY, "--backend", "onnxruntime", "--onnx-dir", "{onnx}"],
        "takes codes -> scores, expected wp -> scores",
        _edit_sidecar("fused", lambda m: m["inputs"][0].update(name="codes")),
        True,
    ),
    Row(
        "sidecar-external-data",
        [*SAMPLE, *TOY, "--backend", "onnxruntime", "--onnx-dir", "{onnx}"],
        "outside the graph's directory",
        _edit_sidecar("fused", lambda m: m.update(external_data=["../../etc/passwd"])),
        True,
    ),
    Row(
        "graph-swapped",
        [*SAMPLE, *TOY, "--backend", "onnxruntime", "--onnx-dir", "{onnx}"],
        "describes mapping.onnx, not fused.onnx",
        _swap_graph,
        True,
    ),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A toy run: samples (40, 2 chunks), boundaries red + green, a rescore store (K=4)."""
    root = tmp_path_factory.mktemp("base") / "run"
    for args in (
        ["sample", "-o", str(root), *TOY, *CPU, "-n", "40", "--chunk-size", "20", "-q"],
        ["fit", "-o", str(root), "-s", "red", "-s", "green", "--chosen-num", "10", "-q"],
        [
            "rescore",
            "-o",
            str(root),
            *TOY,
            *CPU,
            "-b",
            str(root / "boundaries" / "red.npy"),
            "-n",
            "4",
            "--chunk-size",
            "2",
            "-q",
        ],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "onnx"
    result = runner.invoke(
        app, ["export", "-o", str(out), *TOY, "--part", "mapping", "--part", "fused"]
    )
    assert result.exit_code == 0, result.output
    return out


def _snapshot(run: Path) -> dict[str, str]:
    """SHA-256 of every file of every store of the run."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for store in run.glob("*.zarr")
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_one_line_and_exit_2(row, finished_run, tmp_path, monkeypatch, request):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if row.needs_onnx:
        shutil.copytree(request.getfixturevalue("exported"), tmp_path / "onnx")
    places = {
        "run": str(run),
        "tmp": str(tmp_path),
        "red": str(run / "boundaries" / "red.npy"),
        "green": str(run / "boundaries" / "green.npy"),
        "onnx": str(tmp_path / "onnx"),
    }
    args = [a.format(**places) for a in row.args]
    if row.setup is not None:
        row.setup(tmp_path, monkeypatch)
    before = _snapshot(run)
    result = runner.invoke(app, args)
    monkeypatch.undo()
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rescore: error: "), result.stderr
    assert row.expect in lines[0], lines[0]
    assert _snapshot(run) == before, "a store of the run changed"
    assert not (tmp_path / "new").exists(), "a failed first command left a run directory"
