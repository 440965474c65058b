"""The whole method on the synthetic scene model, and crash safety of a real killed process."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from rescore.engine.fit import FitConfig
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import run_all
from rescore.engine.rescore import RescoreConfig
from rescore.engine.sample import SampleConfig
from rescore.engine.spec import ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef
from rescore.models.synthetic import build_synthetic

SYNTHETIC = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),))


def test_rescoring_recovers_the_synthetic_hierarchy(tmp_path):
    """Each factor's Delta peaks inside the layer group that drives it (the paper's finding,
    on a model whose ground truth is known)."""
    run = RunDirectory(tmp_path / "run")
    summary = run_all(
        run,
        SYNTHETIC,
        BackendSpec("torch", "cpu"),
        SampleConfig(num_samples=3000, seed=0, chunk_size=1000, batch_size=250),
        FitConfig(chosen_num=450, space="w"),
        RescoreConfig(num_latents=120, chunk_size=60, batch_size=60),
        progress=False,
    )
    truth = build_synthetic().factor_layers
    assert set(summary["boundaries"]) == set(truth)
    for factor, layers in truth.items():
        entry = summary["boundaries"][factor]
        assert entry["peak_layer"] in layers, (factor, entry["peak_layer"], layers)
        outside = [d for i, d in enumerate(entry["layer_delta"]) if i not in layers]
        assert max(outside) < 0.25 * entry["peak_delta"], factor
        assert entry["delta_all_layers"] > 0
    for path in (run.heatmap, run.cross_effects, run.summary, run.table):
        assert path.stat().st_size > 0


def _sample_command(out, *flags):
    return [
        sys.executable,
        "-m",
        "rescore.engine.cli",
        "sample",
        "-o",
        str(out),
        "--generator",
        "synthetic",
        "-p",
        "synthetic",
        "-n",
        "6000",
        "--chunk-size",
        "500",
        "--batch-size",
        "250",
        "--device",
        "cpu",
        "-q",
        *flags,
    ]


@pytest.mark.parametrize("overlap", ["--no-overlap", "--overlap"])
def test_killed_run_resumes_to_a_store_identical_to_an_uninterrupted_one(tmp_path, overlap):
    """Also with the overlap stages: killed while one chunk is scored, the next prepared and the
    previous written; resumed, and compared with a run in the other mode."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    process = subprocess.Popen(_sample_command(killed, overlap), env=env)
    ledger = killed / "samples.zarr"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ledger.exists() and zarr.open_group(ledger, mode="r")["ledger"][:].sum() >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = zarr.open_group(ledger, mode="r")
    done = partial["ledger"][:].astype(bool)
    assert 2 <= done.sum() < len(done), "the kill should land mid-run"
    # every chunk marked complete holds finite data; the unfinished ones are not marked
    for chunk in np.flatnonzero(done):
        rows = slice(chunk * 500, (chunk + 1) * 500)
        assert np.isfinite(partial["scores"][rows]).all()

    other = "--overlap" if overlap == "--no-overlap" else "--no-overlap"
    subprocess.run(_sample_command(killed, overlap), env=env, check=True)
    subprocess.run(_sample_command(tmp_path / "whole", other), env=env, check=True)
    resumed = zarr.open_group(ledger, mode="r")
    whole = zarr.open_group(tmp_path / "whole" / "samples.zarr", mode="r")
    for name in ("z", "w", "scores", "ledger", "w_avg", "truncation"):
        assert np.array_equal(resumed[name][:], whole[name][:]), name
    assert resumed.attrs["rescore"]["identity"] == whole.attrs["rescore"]["identity"]
