"""Successive elimination of layers (`--eliminate`): the correction holds in simulation, and on
the synthetic model (known layer groups) elimination keeps the true peak layers, certifies the
same peak set as a fixed-K run with fewer images, and writes the same store for any chunk size."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rescore.engine.elimination import EliminationSpec, Eliminator
from rescore.engine.fit import FitConfig
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import fit_step, report_step, rescore_step, sample_step
from rescore.engine.rescore import RescoreConfig, open_rescore
from rescore.engine.sample import SampleConfig
from rescore.engine.spec import GeneratorOptions, ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import ModelRef
from rescore.models.synthetic import build_synthetic

SYNTHETIC = ModelSpec(
    ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=32)
)
CPU = BackendSpec("torch", "cpu")
FACTORS = ("horizon", "palette_hue")  # layout (layers 0-1) and colour (8-9): resolved early


def _eliminator(layers: int, latents: int, paired: bool) -> Eliminator:
    """One boundary, one semantic of interest with R = 1, `layers` layers."""
    one = np.array([0])
    return Eliminator([one], np.array([True]), layers + 1, np.ones(1), latents, paired=paired)


def _simulate(means, latents: int, chunk: int, rng, paired: bool = False) -> Eliminator:
    """One elimination run on Bernoulli(mean) gains of one boundary (R = 1), [L] layers."""
    layers = len(means)
    eliminator = _eliminator(layers, latents, paired)
    for _ in range(0, latents, chunk):
        if not eliminator.active[0]:
            break
        draws = (rng.random((chunk, layers)) < means).astype(np.float32)  # [n, L]
        gains = np.concatenate([draws.max(axis=1, keepdims=True), draws], axis=1)[..., None]
        gains[:, ~eliminator.moving()[0]] = np.nan  # what the driver writes for stopped sets
        eliminator.update(0, gains)
    return eliminator


@pytest.mark.parametrize("paired", [False, True], ids=["per-layer", "paired"])
def test_the_true_best_layers_survive_in_95_percent_of_simulated_runs(paired):
    """Two layers tie for the best Delta, one is close, the rest clearly worse: the corrected
    time-uniform sequences never eliminate a best layer in >= 95% of runs (Bonferroni makes it
    about 100%), while the clearly worse layers are eliminated early in most runs."""
    means = np.array([0.05, 0.45, 0.45, 0.38, 0.05])
    rng = np.random.default_rng(7)
    kept_best, stopped_early = [], []
    for _ in range(60):
        eliminator = _simulate(means, 300, 100, rng, paired)
        kept_best.append(eliminator.survivors(0)[[1, 2], 0].all())
        stopped_early.append(eliminator.set_counts[0, [1, 5]].max() < 300)
    assert np.mean(kept_best) >= 0.95
    assert np.mean(stopped_early) >= 0.9


def test_the_sequences_run_at_the_bonferroni_level():
    eliminator = Eliminator(
        [np.array([0]), np.array([0, 1]), np.array([], int)],
        np.array([True, True, True]),
        11,
        np.ones(2),
        100,
    )
    assert eliminator.alpha == pytest.approx(0.05 / (10 * 3))  # 10 layers x 3 pairs


@pytest.mark.parametrize("paired", [False, True], ids=["per-layer", "paired"])
def test_decisions_do_not_depend_on_the_chunking(paired):
    means = np.array([0.5, 0.1, 0.2, 0.45])
    runs = []
    rng = np.random.default_rng(3)
    draws = (rng.random((400, 4)) < means).astype(np.float32)
    gains = np.concatenate([draws.max(axis=1, keepdims=True), draws], axis=1)[..., None]
    for chunk in (1, 37, 400):
        eliminator = _eliminator(4, 400, paired)
        for start in range(0, 400, chunk):
            if eliminator.active[0]:
                eliminator.update(0, gains[start : start + chunk])
        runs.append(eliminator)
    assert runs[0].set_counts[0].min() < 400  # something was eliminated
    for run in runs[1:]:
        assert np.array_equal(run.set_counts, runs[0].set_counts)
        assert np.array_equal(run.eliminated_at[0], runs[0].eliminated_at[0])
        assert np.array_equal(run.alive[0], runs[0].alive[0])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    run = RunDirectory(tmp_path_factory.mktemp("elim") / "run")
    sample_step(run, SYNTHETIC, CPU, SampleConfig(1200, 0, 600, 200), progress=False)
    fit_step(run, FitConfig(chosen_num=180, space="w", semantics=FACTORS), progress=False)
    return run


def _rescore(fitted, out, config, spec=SYNTHETIC):
    shutil.copytree(fitted.root, out)
    run = RunDirectory(out)
    table = rescore_step(run, CPU, config, spec=spec, progress=False)
    return run, report_step(run, table)


def _bytes(run):
    """The rescore store's sample arrays, as bytes (not the ledger: its length is the chunk
    count; latents after the last boundary stopped are only written up to the end of that
    chunk, as under adaptive K, so z, w and original are compared up to the last moved latent)."""
    store = open_rescore(run.rescore_store)
    arrays = {name: store.group[name][:] for name in ("manipulated", "active", "moved")}
    last = int(np.flatnonzero(arrays["active"].any(axis=1)).max()) + 1
    arrays.update({name: store.group[name][:last] for name in ("z", "w", "original")})
    return {name: array.tobytes() for name, array in arrays.items()}


@pytest.mark.slow
def test_elimination_keeps_the_true_peak_and_certifies_the_fixed_k_set_with_fewer_images(
    fitted, tmp_path
):
    fixed_run, fixed = _rescore(fitted, tmp_path / "fixed", RescoreConfig(120, 1, 2.0, 60, 20))
    eliminate = RescoreConfig(120, 1, 2.0, 60, 20, eliminate=EliminationSpec())
    run, summary = _rescore(fitted, tmp_path / "elim", eliminate)
    truth = build_synthetic().factor_layers
    for factor in FACTORS:
        entry, reference = summary["boundaries"][factor], fixed["boundaries"][factor]
        assert set(entry["indistinguishable_layers"]) <= set(truth[factor])
        assert entry["peak_layer"] in truth[factor]
        assert entry["indistinguishable_layers"] == reference["indistinguishable_layers"]
        assert max(entry["layer_k"]) == 120 and min(entry["layer_k"]) < 120
        eliminated = summary["elimination"]["boundaries"][factor]["eliminated_at"][factor]
        assert set(eliminated) == {str(layer) for layer in range(10)} - {
            str(layer) for layer in truth[factor]
        }
    images = summary["images"]
    assert images["used"] < images["fixed_k"] == fixed["images"]["used"]
    # paired differences: the same sets, from fewer images still
    paired = RescoreConfig(120, 1, 2.0, 60, 20, eliminate=EliminationSpec(paired=True))
    _, by_pairs = _rescore(fitted, tmp_path / "paired", paired)
    for factor in FACTORS:
        entry, reference = by_pairs["boundaries"][factor], fixed["boundaries"][factor]
        assert entry["indistinguishable_layers"] == reference["indistinguishable_layers"]
    assert by_pairs["images"]["used"] < images["used"]
    assert by_pairs["elimination"]["sequences"] == "paired_asymptotic"
    assert summary["peak_sets"].startswith("successive elimination")
    # eliminated cells are NaN after their stop, and the moved mask says so
    store = open_rescore(run.rescore_store)
    moved = store.array("moved")[:].astype(bool)
    manipulated = store.array("manipulated")[:]
    assert np.isnan(manipulated[~moved]).all() and np.isfinite(manipulated[moved]).all()
    # a different chunk size writes the same store
    chunk20 = RescoreConfig(120, 1, 2.0, 20, 20, eliminate=EliminationSpec())
    other, again = _rescore(fitted, tmp_path / "chunk20", chunk20)
    assert _bytes(other) == _bytes(run)
    assert again["elimination"] == summary["elimination"]
    reread = report_step(other)  # `rescore report`: the certified sets replayed from the store
    for factor in FACTORS:
        for key in ("indistinguishable_layers", "peak_layer", "layer_k"):
            assert reread["boundaries"][factor][key] == summary["boundaries"][factor][key]


def test_run_with_eliminate_on_the_command_line(tmp_path):
    """`rescore run --eliminate` end to end on the toy models; `report` keeps it, refuses
    --ci bootstrap in one line."""
    import json

    from typer.testing import CliRunner

    from rescore.engine.cli import app

    runner = CliRunner()
    toy = ["--generator", "toy_models:build_toy_generator"]
    toy += ["-p", "toy_models:build_bounded_toy_predictor", "--backend", "torch"]
    out = str(tmp_path / "run")
    args = ["run", "-o", out, *toy, "-n", "60", "--chosen-num", "10", "--rescore-num", "40"]
    args += ["-s", "red", "-s", "green"]
    result = runner.invoke(app, [*args, "--eliminate", "-q"])
    assert result.exit_code == 0, result.output
    assert "elimination: " in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["elimination"]["boundaries"] and summary["images"]["fixed_k"] > 0
    assert runner.invoke(app, ["report", "-o", out]).exit_code == 0
    failed = runner.invoke(app, ["report", "-o", out, "--ci", "bootstrap"])
    assert failed.exit_code == 2 and "cannot report an elimination run" in failed.stderr


BOUNDED = ModelSpec(
    ModelRef("toy_models:build_toy_generator"),
    (ModelRef("toy_models:build_bounded_toy_predictor"),),
)


def test_a_resumed_elimination_run_writes_the_same_store(tmp_path):
    """Interrupted after its first chunk, damaged, resumed: the replayed decisions give the
    same store as the uninterrupted run (and as a run with another chunk size)."""
    import zarr

    fitted = RunDirectory(tmp_path / "fitted")
    sample_step(fitted, BOUNDED, CPU, SampleConfig(400, 0, 200), progress=False)
    fit_step(fitted, FitConfig(chosen_num=80, semantics=("red", "blue")), progress=False)
    config = RescoreConfig(240, 1, 2.0, 20, 4, eliminate=EliminationSpec())
    run, summary = _rescore(fitted, tmp_path / "c20", config, BOUNDED)
    whole = RescoreConfig(**{**config.__dict__, "chunk_size": 240})
    other, _ = _rescore(fitted, tmp_path / "c240", whole, BOUNDED)
    expected = _bytes(run)
    assert _bytes(other) == expected
    counts = [b["k_per_layer_set"] for b in summary["elimination"]["boundaries"].values()]
    assert min(min(c.values()) for c in counts) < 240  # a layer really was eliminated
    group = zarr.open_group(run.rescore_store, mode="r+")
    moved_rows = np.flatnonzero(group["active"][:].any(axis=1))
    assert moved_rows.max() >= 40  # chunk 1 is recomputed on resume
    group["ledger"][1:] = 0
    group["manipulated"][20:40] = -7.0  # damage in a chunk the resume rewrites
    group["moved"][20:40] = 1
    meta = dict(group.attrs["rescore"])
    meta.pop("finished")
    group.attrs["rescore"] = meta
    rescore_step(run, CPU, config, spec=BOUNDED, progress=False)
    assert _bytes(run) == expected
    finished = open_rescore(run.rescore_store).meta["finished"]
    assert finished["elimination"] == summary["run"]["elimination"]
