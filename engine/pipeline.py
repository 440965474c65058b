"""The steps of a run, top to bottom: sample -> fit -> rescore -> report.

Each step reads what the previous one wrote in the run directory, so they can run separately
(`rescore sample`, `rescore fit`, ...) or chained (`rescore run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rescore.export.backends import BackendSpec

from .atomic import atomic_path
from .boundary import check_store, load_boundaries
from .directions import sefa_step
from .executor import LOCAL, ExecutorSpec, run_chunks
from .fit import FitConfig, FitResult, fit_boundaries, identity_digest
from .layout import RunDirectory
from .naming import NameConfig, Naming, name_step
from .report import summarize, write_cross_effects, write_heatmap, write_summary
from .rescore import RescoreConfig, open_rescore, rescore_boundaries
from .sample import (
    SampleConfig,
    SampleWorker,
    create_samples_store,
    open_samples,
    sample_and_score,
)
from .spec import ModelSpec, SpecOverride, open_model_session, spec_from_store
from .stats import CiMethod, DeltaTable, delta_statistics
from .store import ChunkedStore


def sample_step(
    run: RunDirectory,
    spec: ModelSpec,
    backend: BackendSpec,
    config: SampleConfig,
    *,
    executor: ExecutorSpec = LOCAL,
    progress: bool = True,
) -> ChunkedStore:
    """1. Sample N latents, score them, write DIR/samples.zarr (resumable), here or on Ray."""
    run.ensure_writable()
    with open_model_session(spec, backend) as session:
        if executor.kind == "local":
            return sample_and_score(
                session, spec, run.samples, config, overlap=executor.overlap, progress=progress
            )
        store = create_samples_store(
            session, spec, run.samples, config, session_attrs=executor.record()
        )
    run_chunks(
        executor,
        SampleWorker(spec, backend, config, run.samples),
        store.pending_chunks(),
        rows=lambda c: int(np.subtract(*store.chunk_range(c)[::-1])),
        desc="sample",
        progress=progress,
    )
    return store


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
    force_store: bool = False,
    executor: ExecutorSpec = LOCAL,
    progress: bool = True,
) -> DeltaTable:
    """3. Rescore the boundaries on fresh latents into DIR/rescore.zarr and DIR/rescore.csv.

    The models are rebuilt from the samples store's sources unless `spec` is given; either way
    their weight digests must match the ones the samples were made with, and boundaries whose
    sidecar names another samples store are refused unless `force_store`.
    """
    run.ensure_writable()
    spec = spec or model_spec_of(run)
    boundaries = load_boundaries(boundary_paths or [run.boundaries])
    if run.samples.exists():
        samples = open_samples(run.samples)
        spec.check_digests(samples.meta["identity"])
        check_store(boundaries, identity_digest(samples), force=force_store)
    with open_model_session(spec, backend) as session:
        rescored = rescore_boundaries(
            session,
            spec,
            boundaries,
            run.rescore_store,
            config,
            executor=executor,
            backend=backend,
            progress=progress,
        )
    table = delta_statistics(
        rescored.store,
        accumulators=rescored.accumulators,
        sequences=rescored.sequences,
        ci_method=ci_method or config.ci_method,
        resamples=config.resamples,
        seed=config.seed,
    )
    write_table(table, run.table)
    return table


def write_table(table: DeltaTable, path: Path) -> None:
    """DIR/rescore.csv, written atomically."""
    with atomic_path(path) as staged:
        table.write_csv(staged)


def report_step(
    run: RunDirectory, table: DeltaTable | None = None, *, ci_method: CiMethod | None = None
) -> dict[str, Any]:
    """4. Write DIR/summary.json, DIR/heatmap.png and DIR/cross_effects.png (and, when the
    table is recomputed here, DIR/rescore.csv), each atomically. Recomputed CIs use `ci_method`,
    by default the one the rescore store's `finished` record names (a bootstrap run's intervals
    stay bootstrap intervals)."""
    store = open_rescore(run.rescore_store)
    run.ensure_writable()
    if table is None:
        table = delta_statistics(store, ci_method=ci_method)
        write_table(table, run.table)
    summary = summarize(
        table,
        distance=float(store.meta["identity"]["distance"]),
        finished=store.meta.get("finished"),
        store_meta=store.meta,
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
    executor: ExecutorSpec = LOCAL,
    progress: bool = True,
) -> dict[str, Any]:
    """sample -> fit -> rescore -> report into one run directory (sampling and re-scoring on
    `executor`)."""
    sample_step(run, spec, backend, sample, executor=executor, progress=progress)
    fit_step(run, fit, progress=progress)
    table = rescore_step(run, backend, rescore, spec=spec, executor=executor, progress=progress)
    return report_step(run, table)


def unsupervised_step(
    run: RunDirectory,
    spec: ModelSpec,
    backend: BackendSpec,
    config: NameConfig,
    *,
    num_directions: int = 9,
    progress: bool = True,
) -> Naming:
    """SeFa directions of the generator into DIR/directions/sefa/, named by re-scoring them
    (DIR/names.csv, names.json, names.png)."""
    paths = sefa_step(run.root, spec.generator, spec.options, "all", num_directions)
    return name_step(run, backend, config, [paths[0].parent], spec=spec, progress=progress)


def model_spec_of(run: RunDirectory, override: SpecOverride | None = None) -> ModelSpec:
    """The models recorded in DIR/samples.zarr (built-in names only; plug-ins and changed
    options come from `override`)."""
    meta = open_samples(run.samples).meta
    return spec_from_store(meta.get("sources"), override or SpecOverride())
