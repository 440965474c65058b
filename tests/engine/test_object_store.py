"""A run directory on an object store (`--out s3://bucket/run`): the real S3 protocol, served on
localhost by moto's server mode and spoken by s3fs through zarr's FsspecStore.

Stores written there are object-for-object identical to the local run's files (zarr.json and every
chunk), the CSV and boundaries too; Ray workers write their chunks straight into the bucket; an
interrupted creation or run resumes to the identical store; foreign objects are never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from rescore.engine.check import check_store
from rescore.engine.cli import app
from rescore.engine.errors import StoreError, StoreMismatchError
from rescore.engine.executor import ExecutorSpec
from rescore.engine.layout import RunDirectory
from rescore.engine.location import StoreUrl, as_location
from rescore.engine.pipeline import sample_step
from rescore.engine.sample import SampleConfig, open_samples, sample_and_score
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef

s3fs = pytest.importorskip("s3fs", reason="the s3 extra is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

HERE = Path(__file__).parent
runner = CliRunner()
TOY = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]
CPU = ["--backend", "torch", "--device", "cpu"]
BACKEND = BackendSpec("torch", "cpu", "fp32", None, None, max_batch=4)
CONFIG = SampleConfig(num_samples=40, seed=3, chunk_size=10, batch_size=4)
SPEC = ModelSpec(
    generator=ModelRef("toy_models:build_toy_generator"),
    predictors=(ModelRef("toy_models:build_toy_predictor"),),
)


@pytest.fixture(scope="module")
def s3():
    """Storage options of an S3 endpoint on localhost with an empty bucket `runs`."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "endpoint_url": f"http://{host}:{port}",
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    plain = {k: v for k, v in options.items() if k != "client_kwargs"}
    s3fs.S3FileSystem(**plain).mkdir("runs")  # (a region here would be a location constraint)
    yield options
    server.stop()


def _cli_options(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        args += [
            "--storage-option",
            f"{key}={json.dumps(value) if isinstance(value, dict) else value}",
        ]
    return args


def _invoke(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _objects(url: StoreUrl) -> dict[str, bytes]:
    fs = url.filesystem()
    return {key[len(url.path) + 1 :]: fs.cat_file(key) for key in fs.find(url.path)}


def _arrays(store) -> dict[str, bytes]:
    return {name: store.group[name][:].tobytes() for name in sorted(store.group.array_keys())}


def test_sample_fit_rescore_report_on_s3_write_what_a_local_run_writes(tmp_path, s3):
    url = "s3://runs/cli"
    steps = [
        ["sample", *TOY, *CPU, "-n", "40", "--chunk-size", "20", "-q"],
        ["fit", "-s", "red", "-s", "green", "--chosen-num", "10", "-q"],
        ["rescore", *TOY, *CPU, "-n", "6", "--chunk-size", "2", "-q"],
    ]
    for step in steps:
        _invoke([*step, "-o", str(tmp_path / "local")])
        _invoke([*step, "-o", url, *_cli_options(s3)])
    remote, local = as_location(url, s3), tmp_path / "local"
    for store in ("samples.zarr", "rescore.zarr"):  # every object, byte for byte
        assert _objects(remote / store) == _local_files(local / store), store
    for name in ("red", "green"):  # the sidecars differ only in the samples store they name
        npy = f"boundaries/{name}.npy"
        assert (remote / npy).read_bytes() == (local / npy).read_bytes()
        sidecar = json.loads((remote / f"boundaries/{name}.json").read_bytes())
        assert sidecar.pop("store")["path"] == f"{url}/samples.zarr"
        assert sidecar == {
            k: v
            for k, v in json.loads((local / f"boundaries/{name}.json").read_text()).items()
            if k != "store"
        }
    assert (remote / "rescore.csv").read_bytes() == (local / "rescore.csv").read_bytes()
    assert (remote / "heatmap.png").exists() and (remote / "summary.json").exists()
    (remote / "rescore.csv").remove()
    _invoke(["report", "-o", url, *_cli_options(s3)])  # rewrites the table from the store
    assert (remote / "rescore.csv").read_bytes() == (local / "rescore.csv").read_bytes()
    _invoke(["check", "-o", url, *_cli_options(s3)])
    import rescore  # the public API reads the run where it lies

    assert rescore.read_summary(remote) == rescore.read_summary(local)
    np.testing.assert_array_equal(
        rescore.read_delta_table(remote).delta, rescore.read_delta_table(local).delta
    )
    assert _arrays(rescore.open_rescore(remote / "rescore.zarr")) == _arrays(
        rescore.open_rescore(local / "rescore.zarr")
    )
    assert [b.name for b in rescore.load_boundaries(remote / "boundaries")] == ["green", "red"]
    secrets = json.dumps(open_samples(remote / "samples.zarr").meta)
    assert "testing" not in secrets and s3["endpoint_url"] not in secrets  # nothing recorded


def test_run_on_s3_gives_the_local_table(tmp_path, s3):
    args = [*TOY, *CPU, "-n", "40", "--rescore-num", "4", "--chosen-num", "10", "-s", "red", "-q"]
    _invoke(["run", "-o", str(tmp_path / "local"), *args])
    _invoke(["run", "-o", "s3://runs/run", *_cli_options(s3), *args])
    table = as_location("s3://runs/run/rescore.csv", s3).read_bytes()
    assert table == (tmp_path / "local" / "rescore.csv").read_bytes()


def test_an_interrupted_run_on_s3_resumes_to_the_identical_store(tmp_path, s3):
    sample_step(RunDirectory(tmp_path), SPEC, BACKEND, CONFIG, progress=False)
    root = as_location("s3://runs/resume", s3)
    path = root / "samples.zarr"
    # 1. a creation killed half-way: the group still carries the `creating` marker
    group = zarr.open_group(path.zarr_store(), mode="w", attributes={"rescore": {"creating": True}})
    group.create_array("junk", shape=(3,), dtype="f4")
    # 2. a run killed after two of four chunks ...
    with open_model_session(SPEC, BACKEND) as session:
        store = sample_and_score(session, SPEC, path, CONFIG, chunks=[0, 1], progress=False)
    assert store.completed_chunks() == [0, 1] and "junk" not in store.array_names()
    # 3. ... and while writing the third: its data is there, its ledger entry is not
    store.group["z"][20:30] = np.zeros((10, store.array("z").shape[1]), np.float32)
    sample_step(RunDirectory(root), SPEC, BACKEND, CONFIG, progress=False)
    assert _objects(path) == _local_files(tmp_path / "samples.zarr")
    # 4. a chunk object lost: `check` finds it through zarr's listing, a rerun recomputes it
    (path / "w" / "c" / "1" / "0").remove()
    assert check_store(path, "rescore.samples").damaged_chunks == [1]
    sample_step(RunDirectory(root), SPEC, BACKEND, CONFIG, progress=False)
    assert _objects(path) == _local_files(tmp_path / "samples.zarr")
    with pytest.raises(StoreMismatchError, match="another run configuration"):
        sample_step(RunDirectory(root), SPEC, BACKEND, SampleConfig(40, 4, 10, 4), progress=False)


def test_objects_that_are_not_a_store_are_refused_and_kept(s3):
    root = as_location("s3://runs/foreign", s3)
    (root / "samples.zarr" / "data.bin").write_bytes(b"someone else's")
    with pytest.raises(StoreError, match="not a rescore store"):
        sample_step(RunDirectory(root), SPEC, BACKEND, CONFIG, progress=False)
    assert (root / "samples.zarr" / "data.bin").read_bytes() == b"someone else's"


def test_a_memory_url_works_from_the_python_api(tmp_path):
    sample_step(RunDirectory(tmp_path), SPEC, BACKEND, CONFIG, progress=False)
    sample_step(
        RunDirectory(as_location("memory://api/run")), SPEC, BACKEND, CONFIG, progress=False
    )
    remote = open_samples("memory://api/run/samples.zarr")
    assert _arrays(remote) == _arrays(open_samples(tmp_path / "samples.zarr"))


@pytest.mark.slow
def test_ray_workers_write_their_chunks_straight_into_s3(tmp_path, s3):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    try:
        root = as_location("s3://runs/ray", s3)
        executor = ExecutorSpec("ray", workers=2)
        sample_step(RunDirectory(root), SPEC, BACKEND, CONFIG, executor=executor, progress=False)
    finally:
        ray.shutdown()
    sample_step(RunDirectory(tmp_path), SPEC, BACKEND, CONFIG, progress=False)
    remote, local = open_samples(root / "samples.zarr"), open_samples(tmp_path / "samples.zarr")
    assert _arrays(remote) == _arrays(local)
    session = remote.meta.pop("session")
    assert session["executor"] == "ray" and session["workers"] == 2
    local.meta.pop("session")
    assert remote.meta == local.meta


def test_file_urls_are_local_paths_and_storage_options_parse_json():
    from rescore.engine.cli import _out_value
    from rescore.engine.location import parse_storage_options

    assert as_location("file:///data/run") == Path("/data/run") == _out_value("file:///data/run")
    assert _out_value("s3://b/run") == "s3://b/run"  # kept whole: Path would fold the //
    options = parse_storage_options(["anon=true", 'client_kwargs={"region_name": "x"}', "k=a=b"])
    assert options == {"anon": True, "client_kwargs": {"region_name": "x"}, "k": "a=b"}
    url = as_location("s3://bucket/run/", options)
    assert str(url / "samples.zarr") == "s3://bucket/run/samples.zarr" and "anon" not in str(url)
