"""Rescore with generator-prefix reuse (the default) on the synthetic model: stores are
bit-identical across chunk sizes and a resume, match the reference path (reuse off), and record
which path wrote them so a resume never mixes the two."""

import shutil

import numpy as np
import pytest
import zarr

from rescore.engine.errors import StoreMismatchError
from rescore.engine.fit import FitConfig
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import fit_step, rescore_step, sample_step
from rescore.engine.rescore import RescoreConfig, open_rescore
from rescore.engine.sample import SampleConfig
from rescore.engine.spec import ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import GeneratorOptions, ModelRef

SYNTHETIC = ModelSpec(
    ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=32)
)
CPU = BackendSpec("torch", "cpu")
ARRAYS = ("z", "w", "original", "manipulated", "active")
B = 4


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitted")
    run = RunDirectory(root / "run")
    sample_step(run, SYNTHETIC, CPU, SampleConfig(240, 0, 120, 40), progress=False)
    fit_step(run, FitConfig(chosen_num=40, semantics=("horizon", "lighting")), progress=False)
    return run


def _rescore(fitted, out, chunk: int, reuse: bool = True):
    if not out.exists():
        shutil.copytree(fitted.root, out)
    run = RunDirectory(out)
    config = RescoreConfig(20, 1, 2.0, chunk, B, prefix_reuse=reuse)
    rescore_step(run, CPU, config, spec=SYNTHETIC, progress=False)
    store = open_rescore(run.rescore_store)
    return run, {name: store.array(name)[:] for name in ARRAYS}, store


def test_reuse_stores_are_identical_across_chunk_sizes_and_a_resume(fitted, tmp_path):
    small_run, small, store = _rescore(fitted, tmp_path / "c8", 2 * B)
    _, large, _ = _rescore(fitted, tmp_path / "c16", 4 * B)
    assert store.meta["identity"]["prefix_reuse"] is True
    assert np.isfinite(small["manipulated"]).all()
    for name in ARRAYS:
        assert np.array_equal(small[name], large[name], equal_nan=True), name
    # interrupt the 8-chunk run after its first chunk: damage the rest, unmark it, resume
    group = zarr.open_group(small_run.rescore_store, mode="r+")
    group["ledger"][1:] = 0
    group["manipulated"][2 * B :] = -7.0
    meta = dict(group.attrs["rescore"])
    meta.pop("finished")
    group.attrs["rescore"] = meta
    _, resumed, _ = _rescore(fitted, tmp_path / "c8", 2 * B)
    for name in ARRAYS:
        assert np.array_equal(resumed[name], large[name], equal_nan=True), name


def test_reuse_off_is_the_reference_and_a_resume_never_mixes_the_paths(fitted, tmp_path):
    _, on, _ = _rescore(fitted, tmp_path / "on", 2 * B)
    off_run, off, store = _rescore(fitted, tmp_path / "off", 2 * B, reuse=False)
    assert store.meta["identity"]["prefix_reuse"] is False
    scale = np.abs(off["manipulated"]).max()
    assert np.abs(on["manipulated"] - off["manipulated"]).max() <= 1e-4 * scale
    assert np.array_equal(on["original"], off["original"])
    with pytest.raises(StoreMismatchError, match="prefix_reuse"):
        _rescore(fitted, off_run.root, 2 * B, reuse=True)
