"""The engine's `sample` and `rescore` steps on the ONNX Runtime backend agree with torch eager."""

from __future__ import annotations

import numpy as np
from export_helpers import PARITY_RTOL, relative_error

from rescore.engine.boundary import Boundary
from rescore.engine.rescore import RescoreConfig, rescore_boundaries
from rescore.engine.sample import SampleConfig, sample_and_score
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.export.backends import BackendSpec
from rescore.models.registry import GeneratorOptions, ModelRef

SPEC = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=32))


def test_sample_and_rescore_on_onnxruntime_match_torch_and_record_the_backend(
    synthetic, synthetic_export, tmp_path
):
    generator, _ = synthetic
    directions = generator.directions.numpy()  # [F, D] the factors' true directions
    boundaries = [
        Boundary(name, directions[i : i + 1].copy())
        for i, name in enumerate(generator.factor_names)
        if name in ("horizon", "lighting")
    ]
    sample = SampleConfig(num_samples=24, seed=1, chunk_size=12, batch_size=8)
    rescore = RescoreConfig(num_latents=6, seed=2, chunk_size=6, batch_size=6)
    stores = {}
    for backend in ("torch", "onnxruntime"):
        spec = BackendSpec(backend, "cpu", onnx_dir=synthetic_export.directory)
        with open_model_session(SPEC, spec) as session:
            samples = sample_and_score(
                session, SPEC, tmp_path / f"{backend}-samples.zarr", sample, progress=False
            )
            rescored = rescore_boundaries(
                session,
                SPEC,
                boundaries,
                tmp_path / f"{backend}-rescore.zarr",
                rescore,
                progress=False,
            ).store
        stores[backend] = samples, rescored
        for store in (samples, rescored):
            assert store.meta["identity"]["backend"] == backend
            assert store.meta["identity"]["precision"] == "fp32"
    (torch_samples, torch_rescore), (ort_samples, ort_rescore) = stores.values()
    np.testing.assert_array_equal(ort_samples.array("z")[:], torch_samples.array("z")[:])
    assert relative_error(ort_samples.array("w")[:], torch_samples.array("w")[:]) < PARITY_RTOL
    assert relative_error(ort_samples.array("scores")[:], torch_samples.array("scores")[:]) < (
        PARITY_RTOL
    )
    for name in ("original", "manipulated"):
        ort_values, torch_values = ort_rescore.array(name)[:], torch_rescore.array(name)[:]
        assert np.isfinite(ort_values).all()
        flat = ort_values.reshape(-1, ort_values.shape[-1])
        assert relative_error(flat, torch_values.reshape(flat.shape)) < PARITY_RTOL


def test_peak_sets_and_no_effect_flags_agree_between_torch_and_onnxruntime(
    synthetic, synthetic_export, tmp_path
):
    """Scores differ at float rounding between backends; the reported conclusions must not."""
    from rescore.engine.stats import delta_statistics
    from rescore.export.threads import thread_budget

    generator, _ = synthetic
    directions = generator.directions.numpy()
    chosen = ("horizon", "object_size", "lighting")
    boundaries = [
        Boundary(name, directions[i : i + 1].copy())
        for i, name in enumerate(generator.factor_names)
        if name in chosen
    ]
    config = RescoreConfig(num_latents=48, seed=4, chunk_size=48, batch_size=16)
    tables = {}
    for backend in ("torch", "onnxruntime"):
        spec = BackendSpec(backend, "cpu", onnx_dir=synthetic_export.directory)
        with open_model_session(SPEC, spec) as session:
            if backend == "onnxruntime":
                assert session.threads == thread_budget()  # one budget with torch and numba
            run = rescore_boundaries(
                session, SPEC, boundaries, tmp_path / f"{backend}.zarr", config, progress=False
            )
        tables[backend] = delta_statistics(run.store, accumulators=run.accumulators)
    torch_table, ort_table = tables["torch"], tables["onnxruntime"]
    assert np.array_equal(torch_table.no_effect, ort_table.no_effect)
    assert np.array_equal(torch_table.methods, ort_table.methods)
    assert not torch_table.no_effect.all()  # the comparison is not vacuous
    for m in range(len(boundaries)):
        torch_peaks, torch_sets, torch_ranked = torch_table.peak_layers(m)
        ort_peaks, ort_sets, ort_ranked = ort_table.peak_layers(m)
        assert np.array_equal(torch_ranked, ort_ranked)
        assert np.array_equal(torch_sets[:, torch_ranked], ort_sets[:, ort_ranked])
        assert np.array_equal(torch_peaks[torch_ranked], ort_peaks[ort_ranked])
