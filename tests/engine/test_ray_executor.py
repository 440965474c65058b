"""`--executor ray`: chunks processed by Ray actors give stores byte-identical to one process
(sample; rescore with fixed and adaptive K).

A local Ray cluster (2 CPUs) is started inside the test; the toy models are plugged in the way
users plug theirs, with this folder on the workers' PYTHONPATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescore.engine.executor import ExecutorSpec
from rescore.engine.fit import FitConfig
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import fit_step, rescore_step, sample_step
from rescore.engine.rescore import CiTarget, RescoreConfig, open_rescore
from rescore.engine.sample import SampleConfig, open_samples
from rescore.engine.spec import ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
BACKEND = BackendSpec("torch", "cpu", "fp32", None, None, max_batch=4)
CONFIG = SampleConfig(num_samples=60, seed=3, chunk_size=10, batch_size=4)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    marker_dir = tmp_path_factory.mktemp("ray-markers")
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env["RESCORE_TEST_MARKERS"] = str(marker_dir)
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    os.environ["RESCORE_TEST_MARKERS"] = str(marker_dir)
    yield marker_dir
    ray.shutdown()


def _spec(predictor: str) -> ModelSpec:
    return ModelSpec(
        generator=ModelRef("toy_models:build_toy_generator"),
        predictors=(ModelRef(predictor),),
    )


def _arrays(path: Path) -> dict[str, bytes]:
    store = open_samples(path)
    return {name: store.group[name][:].tobytes() for name in sorted(store.group.array_keys())}


def test_sample_on_two_ray_workers_equals_one_process(tmp_path, local_ray):
    spec = _spec("toy_models:build_toy_predictor")
    sample_step(RunDirectory(tmp_path / "one"), spec, BACKEND, CONFIG, progress=False)
    sample_step(
        RunDirectory(tmp_path / "ray"),
        spec,
        BACKEND,
        CONFIG,
        executor=ExecutorSpec("ray", workers=2),
        progress=False,
    )
    assert _arrays(tmp_path / "ray" / "samples.zarr") == _arrays(tmp_path / "one" / "samples.zarr")
    session = open_samples(tmp_path / "ray" / "samples.zarr").meta["session"]
    assert session["executor"] == "ray" and session["workers"] == 2


def test_a_worker_killed_mid_chunk_is_restarted_and_the_store_is_identical(tmp_path, local_ray):
    spec = _spec("toy_models:build_killer_predictor")
    sample_step(
        RunDirectory(tmp_path / "ray"),
        spec,
        BACKEND,
        CONFIG,
        executor=ExecutorSpec("ray", workers=2),
        progress=False,
    )
    assert (local_ray / "killed").exists(), "no worker was killed: the test proves nothing"
    sample_step(RunDirectory(tmp_path / "one"), spec, BACKEND, CONFIG, progress=False)
    assert _arrays(tmp_path / "ray" / "samples.zarr") == _arrays(tmp_path / "one" / "samples.zarr")
    assert open_samples(tmp_path / "ray" / "samples.zarr").is_complete()


def test_without_ray_the_error_names_the_extra(monkeypatch):
    import builtins

    from rescore.engine import executor
    from rescore.engine.errors import ExecutorError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ExecutorError, match=r'pip install "rescore\[ray\]"'):
        executor.require_ray()


def _rescore_arrays(path: Path) -> dict[str, bytes]:
    store = open_rescore(path)
    return {name: store.group[name][:].tobytes() for name in sorted(store.group.array_keys())}


def _same_rescore_on_one_process_and_two_ray_workers(tmp_path, spec, config) -> dict:
    """Sample, fit and rescore once locally and once on 2 Ray workers; assert every array, the
    CSV and the `finished` record are equal; return the Ray run's `finished` record."""
    runs = {}
    for name, executor in (("one", ExecutorSpec()), ("ray", ExecutorSpec("ray", workers=2))):
        run = RunDirectory(tmp_path / name)
        sample_step(run, spec, BACKEND, CONFIG, progress=False)
        fit_step(run, FitConfig(chosen_num=10, semantics=("red", "green")), progress=False)
        rescore_step(run, BACKEND, config, spec=spec, executor=executor, progress=False)
        runs[name] = run
    one, distributed = (_rescore_arrays(runs[n].rescore_store) for n in ("one", "ray"))
    assert distributed == one
    assert runs["ray"].table.read_text() == runs["one"].table.read_text()
    finished = open_rescore(runs["ray"].rescore_store).meta["finished"]
    assert finished == open_rescore(runs["one"].rescore_store).meta["finished"]
    assert open_rescore(runs["ray"].rescore_store).meta["session"]["executor"] == "ray"
    return finished


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed-k", "adaptive-k"])
def test_rescore_on_two_ray_workers_equals_one_process(tmp_path, local_ray, adaptive):
    spec = _spec("toy_models:build_bounded_toy_predictor")
    target = CiTarget(0.08, ("red", "green")) if adaptive else None
    config = RescoreConfig(num_latents=400 if adaptive else 40, chunk_size=8, batch_size=4)
    config = RescoreConfig(**{**config.__dict__, "target": target})
    finished = _same_rescore_on_one_process_and_two_ray_workers(tmp_path, spec, config)
    if adaptive:  # the run really stopped early, at the same K, for a boundary
        assert finished["reason"] == "target_met" and min(finished["k"].values()) < 400


def test_rescore_with_elimination_on_two_ray_workers_equals_one_process(tmp_path, local_ray):
    """`--eliminate`: the driver's per-latent decisions travel in the mask; same store."""
    from rescore.engine.elimination import EliminationSpec

    spec = _spec("toy_models:build_bounded_toy_predictor")
    config = RescoreConfig(num_latents=200, chunk_size=8, batch_size=4)
    config = RescoreConfig(**{**config.__dict__, "eliminate": EliminationSpec()})
    finished = _same_rescore_on_one_process_and_two_ray_workers(tmp_path, spec, config)
    counts = [b["k_per_layer_set"] for b in finished["elimination"]["boundaries"].values()]
    assert min(min(c.values()) for c in counts) < 200  # a layer really was eliminated
