"""Rescore stores are bit-identical across chunk sizes and resumes (the micro-batch grid), adaptive
K stops at the same latent whatever the chunking, and reports keep the run's CI method."""

import json

import numpy as np
import pytest
import zarr

from rescore.engine.errors import ScoreError
from rescore.engine.executor import LOCAL, ExecutorSpec
from rescore.engine.fit import FitConfig
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import fit_step, report_step, rescore_step, sample_step
from rescore.engine.rescore import CiTarget, RescoreConfig, open_rescore
from rescore.engine.sample import SampleConfig
from rescore.engine.spec import ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef

BOUNDED = ModelSpec(
    ModelRef("toy_models:build_toy_generator"),
    (ModelRef("toy_models:build_bounded_toy_predictor"),),
)
CPU = BackendSpec("torch", "cpu")
ARRAYS = ("z", "w", "original", "manipulated", "active")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A samples store and two fitted boundaries, copied into each test's run directory."""
    root = tmp_path_factory.mktemp("fitted")
    run = RunDirectory(root / "run")
    sample_step(run, BOUNDED, CPU, SampleConfig(400, 0, 200), progress=False)
    fit_step(run, FitConfig(chosen_num=80, semantics=("red", "blue")), progress=False)
    return run


def _rescore(fitted, out, config, executor=LOCAL):
    import shutil

    run = RunDirectory(out)
    shutil.copytree(fitted.root, out)
    table = rescore_step(run, CPU, config, spec=BOUNDED, executor=executor, progress=False)
    return run, table


def _arrays(run):
    store = open_rescore(run.rescore_store)
    return {name: store.array(name)[:] for name in ARRAYS}, store


def test_stores_are_identical_across_chunk_sizes_and_a_resume(fitted, tmp_path):
    small, _ = _rescore(fitted, tmp_path / "c100", RescoreConfig(300, 1, 2.0, 100, 4))
    large, _ = _rescore(fitted, tmp_path / "c1024", RescoreConfig(300, 1, 2.0, 1024, 4))
    a, store_a = _arrays(small)
    b, _ = _arrays(large)
    for name in ARRAYS:
        assert np.array_equal(a[name], b[name], equal_nan=True), name
    assert store_a.meta["identity"]["micro_batch"] == 4
    # interrupt the 100-chunk run after its first chunk: damage the rest, unmark it, resume
    group = zarr.open_group(small.rescore_store, mode="r+")
    group["ledger"][1:] = 0
    group["manipulated"][100:] = -7.0
    meta = dict(group.attrs["rescore"])
    meta.pop("finished")
    group.attrs["rescore"] = meta
    rescore_step(small, CPU, RescoreConfig(300, 1, 2.0, 100, 4), spec=BOUNDED, progress=False)
    resumed, _ = _arrays(small)
    for name in ARRAYS:
        assert np.array_equal(resumed[name], b[name], equal_nan=True), name


ADAPTIVE = CiTarget(0.1, ("red", "blue"))


@pytest.mark.parametrize("target", [None, ADAPTIVE], ids=["fixed", "adaptive"])
def test_stores_are_byte_identical_with_and_without_overlap(fitted, tmp_path, target):
    """Prefetched chunks (fixed K) and the background writer change no bit of any array."""
    config = RescoreConfig(600 if target else 300, 1, 2.0, 100, 4, target)
    runs = [
        _rescore(fitted, tmp_path / f"overlap-{on}", config, ExecutorSpec(overlap=on))
        for on in (False, True)
    ]
    (serial, table_a), (overlapped, table_b) = runs
    a = zarr.open_group(serial.rescore_store, mode="r")
    b = zarr.open_group(overlapped.rescore_store, mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in a.array_keys():
        assert a[name][:].tobytes() == b[name][:].tobytes(), name
    assert a.attrs["rescore"]["finished"] == b.attrs["rescore"]["finished"]
    assert np.array_equal(table_a.counts, table_b.counts)
    if target is not None:
        assert np.any(table_a.counts < 600)  # the stopping rule acted during the run


def test_a_chunk_that_cuts_the_batch_grid_is_refused(fitted, tmp_path):
    with pytest.raises(ScoreError, match="multiple of --batch-size"):
        _rescore(fitted, tmp_path / "bad", RescoreConfig(300, 1, 2.0, 100, 32))


def test_adaptive_stop_does_not_depend_on_the_chunk_size(fitted, tmp_path):
    target = CiTarget(0.1, ("red", "blue"))
    runs = [
        _rescore(fitted, tmp_path / f"c{c}", RescoreConfig(1200, 1, 2.0, c, 4, target))
        for c in (100, 1024)
    ]
    (run_a, table_a), (run_b, table_b) = runs
    assert np.array_equal(table_a.counts, table_b.counts)
    assert np.any(table_a.counts % 100)  # stopped inside a chunk
    assert np.array_equal(table_a.ci_low, table_b.ci_low, equal_nan=True)
    assert np.array_equal(table_a.ci_high, table_b.ci_high, equal_nan=True)
    finished = _arrays(run_a)[1].meta["finished"]
    assert finished["reason"] == "target_met", table_a.counts
    names = table_a.boundary_names
    assert finished["k"] == {n: int(c) for n, c in zip(names, table_a.counts, strict=True)}
    assert all(w <= 0.1 for w in finished["stop_half_width"].values())
    summary = report_step(run_a)
    assert summary["ci_methods_used"].keys() == {"cs_bernstein"}


def test_report_after_a_bootstrap_run_keeps_its_intervals_and_method(fitted, tmp_path):
    config = RescoreConfig(120, 1, 2.0, 60, 4, ci_method="bootstrap", resamples=300)
    run, table = _rescore(fitted, tmp_path / "boot", config)
    first = report_step(run, table)
    csv_before = run.table.read_text()
    again = report_step(run)  # `rescore report`: statistics recomputed from the store
    assert again["ci_method"] == first["ci_method"] == "bootstrap"
    assert again["ci_params"] == {"confidence": 0.95, "resamples": 300, "seed": 1}
    assert again["boundaries"] == first["boundaries"]
    assert json.loads(run.summary.read_text())["ci_method"] == "bootstrap"
    rows = csv_before.splitlines()
    assert rows[0].endswith(",ci_method,flags") and all(",bootstrap," in r for r in rows[1:])


def test_intervals_stay_in_range_and_no_effect_cells_are_not_ranked(fitted, tmp_path):
    run, table = _rescore(fitted, tmp_path / "auto", RescoreConfig(120, 1, 2.0, 60, 4))
    assert set(np.unique(table.methods)) == {"bernstein"}
    finite = np.isfinite(table.ci_low)
    assert finite.all() and np.all(table.ci_low >= 0) and np.all(table.ci_high <= 2.0)
    assert np.all(table.ci_high > table.ci_low)  # no zero-width interval, even for 0 gains
    summary = report_step(run, table)
    constant = summary["layer_ranking"]["red"]["constant"]  # a semantic nothing moves
    assert constant == {"peak_layer": None, "indistinguishable_layers": [], "no_effect": True}
    assert summary["boundaries"]["red"]["peak_layer"] == 0
    assert "no_effect" in table.flags[0, 4, 3]
