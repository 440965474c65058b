"""The steps of a run, top to bottom: sample -> fit -> rescore -> report.

Each step reads what the previous one wrote in the run directory, so they can run separately
(`rescore sample`, `rescore fit`, ...) or chained (`rescore run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rescore.export.backends import BackendSpec

from .boundary import load_boundaries
from .fit import FitConfig, FitResult, fit_boundaries
from .layout import RunDirectory
from .report import summarize, write_cross_effects, write_heatmap, write_summary
from .rescore import RescoreConfig, open_rescore, rescore_boundaries
from .sample import SampleConfig, open_samples, sample_and_score
from .spec import ModelSpec, open_model_session
from .stats import CiMethod, DeltaTable, delta_statistics
from .store import ChunkedStore


def sample_step(
    run: RunDirectory,
    spec: ModelSpec,
    backend: BackendSpec,
    config: SampleConfig,
    *,
    progress: bool = True,
) -> ChunkedStore:
    """1. Sample N latents, score them, write DIR/samples.zarr (resumable)."""
    run.ensure_writable()
    with open_model_session(spec, backend) as session:
        return sample_and_score(session, spec, run.samples, config, progress=progress)


def fit_step(run: RunDirectory, config: FitConfig, *, progress: bool = True) -> list[FitResult]:
    """2. Fit one boundary per semantic from DIR/samples.zarr into DIR/boundaries/."""
    run.ensure_writable()
    return fit_boundaries(open_samples(run.samples), run.boundaries, config, progress=progress)


def rescore_step(
    run: RunDirectory,
    backend: BackendSpec,
    config: RescoreConfig,
    *,
    boundary_paths: list[Path] | None = None,
    spec: ModelSpec | None = None,
    ci_method: CiMethod | None = None,
    progress: bool = True,
) -> DeltaTable:
    """3. Rescore the boundaries on fresh latents into DIR/rescore.zarr and DIR/rescore.csv.

    The models are rebuilt from the samples store's sources unless `spec` is given; either way
    their weight digests must match the ones the samples were made with.
    """
    run.ensure_writable()
    spec = spec or model_spec_of(run)
    if run.samples.exists():
        spec.check_digests(open_samples(run.samples).meta["identity"])
    boundaries = load_boundaries(boundary_paths or [run.boundaries])
    with open_model_session(spec, backend) as session:
        rescored = rescore_boundaries(
            session, spec, boundaries, run.rescore_store, config, progress=progress
        )
    table = delta_statistics(
        rescored.store,
        accumulators=rescored.accumulators,
        sequences=rescored.sequences,
        ci_method=ci_method or config.ci_method,
        resamples=config.resamples,
        seed=config.seed,
    )
    table.write_csv(run.table)
    return table


def report_step(run: RunDirectory, table: DeltaTable | None = None) -> dict[str, Any]:
    """4. Write DIR/summary.json, DIR/heatmap.png and DIR/cross_effects.png."""
    store = open_rescore(run.rescore_store)
    table = table or delta_statistics(store)
    summary = summarize(
        table,
        distance=float(store.meta["identity"]["distance"]),
        finished=store.meta.get("finished"),
    )
    write_summary(summary, run.summary)
    write_heatmap(table, run.heatmap)
    write_cross_effects(table, run.cross_effects)
    return summary


def run_all(
    run: RunDirectory,
    spec: ModelSpec,
    backend: BackendSpec,
    sample: SampleConfig,
    fit: FitConfig,
    rescore: RescoreConfig,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """sample -> fit -> rescore -> report into one run directory."""
    sample_step(run, spec, backend, sample, progress=progress)
    fit_step(run, fit, progress=progress)
    table = rescore_step(run, backend, rescore, spec=spec, progress=progress)
    return report_step(run, table)


def model_spec_of(run: RunDirectory) -> ModelSpec:
    """The models recorded in DIR/samples.zarr."""
    return ModelSpec.from_sources(open_samples(run.samples).meta["sources"])
