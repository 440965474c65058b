"""The `rescore` command line: one function per command, each a thin call into `pipeline`."""

from __future__ import annotations

import errno
import functools
import importlib
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from rescore.models.errors import RescoreError

from .layout import RunDirectory
from .location import as_location, is_url, parse_storage_options


class _Lazy:
    """`module` (or its attribute `name`), imported on first use. torch, numba, onnx and
    scikit-learn load only when a command runs, so `rescore --help`, `rescore CMD --help` and
    usage errors answer at once."""

    def __init__(self, module: str, name: str | None = None) -> None:
        self._module, self._name = module, name

    def _target(self):
        module = importlib.import_module(self._module)
        return module if self._name is None else getattr(module, self._name)

    def __getattr__(self, attribute: str):
        return getattr(self._target(), attribute)

    def __call__(self, *args, **kwargs):
        return self._target()(*args, **kwargs)

    def __iter__(self):
        return iter(self._target())

    def __contains__(self, item) -> bool:
        return item in self._target()


pipeline = _Lazy("rescore.engine.pipeline")
BackendSpec = _Lazy("rescore.export.backends", "BackendSpec")
GeneratorOptions = _Lazy("rescore.models.registry", "GeneratorOptions")
ModelRef = _Lazy("rescore.models.registry", "ModelRef")
FitConfig = _Lazy("rescore.engine.fit", "FitConfig")
CiTarget = _Lazy("rescore.engine.rescore", "CiTarget")
RescoreConfig = _Lazy("rescore.engine.rescore", "RescoreConfig")
SampleConfig = _Lazy("rescore.engine.sample", "SampleConfig")
ModelSpec = _Lazy("rescore.engine.spec", "ModelSpec")
SpecOverride = _Lazy("rescore.engine.spec", "SpecOverride")
check_options = _Lazy("rescore.engine.spec", "check_options")
CI_METHODS = _Lazy("rescore.engine.stats", "CI_METHODS")
ExecutorSpec = _Lazy("rescore.engine.executor", "ExecutorSpec")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rescore: layer-wise semantic analysis of GANs (HiGAN re-scoring at scale).\n\n"
    "Quick start:  rescore demo --out runs/demo",
)


@app.callback()
def _startup(
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch, numba and ONNX Runtime together (default: "
            "OMP_NUM_THREADS if set, else every CPU this process may use)."
        ),
    ] = None,
) -> None:
    """rescore: layer-wise semantic analysis of GANs (HiGAN re-scoring at scale)."""
    from rescore.export.threads import request_thread_budget

    try:
        request_thread_budget(threads)  # applied when a command runs: help stays instant
    except RescoreError as error:
        typer.echo(f"rescore: error: {error}", err=True)
        raise typer.Exit(2) from None


def _out_value(text: str) -> Path | str:
    """--out as given: a local `Path` (``file://`` URLs too), or an object-store URL kept as the
    string (`Path` would fold its ``//``); commands that take no URL refuse it."""
    if not is_url(text):
        return Path(text)
    return as_location(text) if text.lower().startswith("file://") else text


Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Run directory (created if missing); sample, fit, rescore, run, report and check "
        "also take an fsspec URL: s3://bucket/run, gs://..., az://...",
        parser=_out_value,
    ),
]
StorageOptions = Annotated[
    list[str],
    typer.Option(
        "--storage-option",
        help="fsspec storage option KEY=VALUE for a URL --out (repeatable), e.g. "
        "endpoint_url=http://localhost:9000; credentials are best left to the backend's "
        "environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...). Never recorded in a store.",
    ),
]
# Commands whose --out may be an object-store URL (the others write local files only).
_URL_COMMANDS = ("sample", "fit", "rescore", "report", "run", "check")
Generator = Annotated[
    str,
    typer.Option(
        help="Generator NAME[=CHECKPOINT]: stylegan=/w/stylegan_bedroom256_generator.pth, "
        "synthetic, or package.module:factory[=PATH]."
    ),
]
Predictors = Annotated[
    list[str],
    typer.Option(
        "--predictor",
        "-p",
        help="Predictor NAME[=PATH], repeatable: places365=/w/places365, color, synthetic.",
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        help="Scoring backend: auto (fastest here), torch, onnxruntime, tensorrt, compiled "
        "(torch.compile; CUDA graphs on a GPU) or openvino (CPU, rescore[openvino])."
    ),
]
Precision = Annotated[str, typer.Option(help="fp32, or fp16/bf16 (tensorrt or compiled backend).")]
CacheDir = Annotated[
    Path | None, typer.Option(help="Cache of exported graphs and engines (~/.cache/rescore).")
]
OnnxDir = Annotated[
    Path | None, typer.Option(help="Use the ONNX files `rescore export` wrote there.")
]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Seed = Annotated[int, typer.Option(help="Seed of the latent source.")]
BatchSize = Annotated[
    int | None,
    typer.Option(help="Codes per generate-and-score pass (default: 4 on CPU, 32 on CUDA)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
TruncationPsi = Annotated[float | None, typer.Option(help="Truncation psi (model default 0.7).")]
TruncationLayers = Annotated[int | None, typer.Option(help="Truncated layers (model default).")]
ModelSeed = Annotated[int, typer.Option(help="Seed of seed-built models (synthetic).")]
ClassIndex = Annotated[
    int | None, typer.Option(help="Class of a conditional generator (BigGAN, NVlabs c_dim > 0).")
]
Eliminate = Annotated[
    bool,
    typer.Option(
        "--eliminate",
        help="Successive elimination: stop moving layers that are not the peak of each "
        "boundary's own semantic (95% simultaneous; see README).",
    ),
]
EliminateSemantic = Annotated[
    list[str],
    typer.Option(help="Semantics of interest of --eliminate for every boundary (repeatable)."),
]
EliminatePaired = Annotated[
    bool,
    typer.Option(
        "--eliminate-paired",
        help="--eliminate on paired layer differences (asymptotic sequences: far fewer "
        "latents, valid as K grows like the fixed-K peak sets; see README).",
    ),
]
EliminateTie = Annotated[
    float,
    typer.Option(
        help="--eliminate: survivors within this fraction of the peak's Delta are a tie "
        "(0: run ties to the maximum K)."
    ),
]
Executor = Annotated[
    str,
    typer.Option(
        help="Who processes the chunks: local (this process) or ray (a pool of Ray actors)."
    ),
]
Workers = Annotated[
    int, typer.Option(help="Ray actors (--executor ray); one per GPU on GPU nodes.")
]
RayAddress = Annotated[
    str | None,
    typer.Option(help="Ray cluster to join (auto, ray://HOST:PORT); default: start a local Ray."),
]
Overlap = Annotated[
    bool | None,
    typer.Option(
        "--overlap/--no-overlap",
        help="Prepare latents and write chunks in threads while scoring (default: on GPUs, "
        "off on CPUs; the store is the same either way).",
    ),
]
ForceFamily = Annotated[
    bool, typer.Option(help="Use boundaries fitted on another generator family anyway.")
]
ForceStore = Annotated[
    bool, typer.Option(help="Use boundaries fitted on another samples store anyway.")
]
PrefixReuse = Annotated[
    bool,
    typer.Option(
        "--prefix-reuse/--no-prefix-reuse",
        help="Branch each moved layer from the generator prefix it leaves alone (same scores to "
        "float rounding; recorded in the store). Off: every code through the whole pass.",
    ),
]


# Errors of the machine rather than of rescore: a full disk, a read-only or forbidden location.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _user_errors(command):
    """Turn user mistakes into one line on stderr and exit code 2; Ctrl-C into 130. A run
    directory the failed command created and left empty is removed again."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        created = _first_missing(kwargs.get("out"))
        try:
            _refuse_url(command.__name__, kwargs.get("out"))
            from rescore.export.threads import apply_thread_budget

            apply_thread_budget()  # torch, numba and ONNX Runtime: one --threads budget
            return command(*args, **kwargs)
        except RescoreError as error:
            _remove_if_empty(created)
            typer.echo(f"rescore: error: {error}", err=True)
            raise typer.Exit(2) from None
        except OSError as error:
            if error.errno not in _ENVIRONMENT_ERRNOS:
                raise
            _remove_if_empty(created)
            typer.echo(f"rescore: error: {_environment_message(error)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("rescore: interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _refuse_url(command: str, out: Path | str | None) -> None:
    """A URL --out for a command that writes local files only is a one-line error."""
    if isinstance(out, str) and command not in _URL_COMMANDS:
        name = command.removesuffix("_command").replace("_", " ")
        raise RescoreError(
            f"rescore {name} writes to a local directory, not {out}; give a local --out "
            f"(object-store URLs work with {', '.join(_URL_COMMANDS)})"
        )


def _run_directory(out: Path | str, storage_options: list[str]) -> RunDirectory:
    """The run directory --out names: local, or on an object store with `storage_options`."""
    return RunDirectory(as_location(out, parse_storage_options(storage_options)))


def _environment_message(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device writing{where}; free disk space and rerun the same "
            f"command (finished work is kept)"
        )
    return (
        f"cannot write{where} ({error.strerror}); choose a writable location (--out, --output, "
        f"--cache-dir) or fix its permissions"
    )


def _first_missing(path: Path | None) -> Path | None:
    """The outermost directory of `path` that does not exist yet (what a command would create)."""
    if not isinstance(path, Path) or path.exists():
        return None
    missing = path
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    return missing


def _remove_if_empty(directory: Path | None) -> None:
    """Remove `directory` (created by the failed command) if it holds no work: no files
    besides stores without a single completed chunk."""
    if directory is None or not directory.is_dir():
        return
    stores = [p for p in directory.rglob("*.zarr") if p.is_dir()]
    loose = [
        p
        for p in directory.rglob("*")
        if (p.is_file() or p.is_symlink()) and not any(s in p.parents for s in stores)
    ]
    if not loose and not any(_has_completed_chunks(s) for s in stores):
        shutil.rmtree(directory, ignore_errors=True)


def _has_completed_chunks(path: Path) -> bool:
    import zarr

    try:
        return bool(zarr.open_group(path, mode="r")["ledger"][:].any())
    except Exception:  # unreadable: keep it, someone may want to look at it
        return True


def _finite(option: str, value: float) -> float:
    """Refuse NaN and infinities for a float option."""
    if not math.isfinite(value):
        raise RescoreError(f"{option} must be a finite number, got {value}")
    return value


def _at_least(option: str, value: int, low: int, why: str = "") -> int:
    if value < low:
        raise RescoreError(f"{option} must be at least {low}{why}, got {value}")
    return value


def _batch(batch_size: int | None, device: str) -> int:
    """The batch size asked for, or the default: 4 on CPU (large generators run best in small
    batches there), 32 on CUDA."""
    if batch_size is not None:
        if batch_size < 1:
            raise RescoreError(f"--batch-size must be at least 1, got {batch_size}")
        return batch_size
    import torch

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return 32 if on_gpu else 4


def _micro_batch(batch_size: int | None, device: str, chunk_size: int) -> int:
    """The batch size of the micro-batch grid: the one asked for, else the largest divisor of the
    chunk size up to the device default (scores must not depend on the chunking)."""
    if batch_size is not None:
        return _batch(batch_size, device)
    return math.gcd(_batch(None, device), max(chunk_size, 1))


def _grid(chunk_size: int, batch_size: int) -> tuple[int, int]:
    """(chunk, batch) with the chunk rounded up to a multiple of the batch (the micro-batch grid
    that keeps scores independent of the chunking)."""
    return -(-chunk_size // batch_size) * batch_size, batch_size


def _backend_spec(
    backend: str,
    device: str,
    precision: str,
    cache_dir: Path | None,
    onnx_dir: Path | None,
    batch_size: int | None,
) -> BackendSpec:
    max_batch = _batch(batch_size, device)
    if onnx_dir is not None and backend == "torch":
        raise RescoreError(
            "--onnx-dir needs a compiled backend (the torch backend runs the models themselves); "
            "use --backend onnxruntime or tensorrt, or drop --onnx-dir"
        )
    from rescore.export.cache import clean_cache_leftovers

    clean_cache_leftovers(cache_dir)
    return BackendSpec(backend, device, precision, cache_dir, onnx_dir, max_batch=max_batch)


def _elimination(eliminate: bool, semantics: list[str], tie: float, paired: bool = False):
    """The EliminationSpec asked for, or None; its options need --eliminate."""
    if not eliminate:
        if semantics or tie or paired:
            raise RescoreError(
                "--eliminate-semantic, --eliminate-tie and --eliminate-paired need --eliminate"
            )
        return None
    from .elimination import EliminationSpec

    return EliminationSpec(tuple(semantics), tie, paired)


def _executor(
    executor: str, workers: int, ray_address: str | None, device: str, overlap: bool | None = None
):
    """The executor asked for; Ray actors ask for one GPU each when the run is on CUDA."""
    on_gpu = device.startswith("cuda")
    return ExecutorSpec(
        executor, workers, ray_address, gpus_per_worker=1.0 if on_gpu else 0.0, overlap=overlap
    )


def _spec(
    generator: str,
    predictors: list[str],
    psi: float | None,
    layers: int | None,
    seed: int,
    class_index: int | None = None,
) -> ModelSpec:
    if not predictors:
        raise RescoreError("no predictor given; pass --predictor NAME[=PATH] (e.g. places365=DIR)")
    return ModelSpec(
        generator=ModelRef.parse(generator),
        predictors=tuple(ModelRef.parse(p) for p in predictors),
        options=check_options(
            GeneratorOptions(
                truncation_psi=psi, truncation_layers=layers, seed=seed, class_index=class_index
            )
        ),
    )


def _stored_spec(
    run: RunDirectory,
    generator: str | None,
    predictors: list[str],
    options: dict,
) -> ModelSpec | None:
    """The models of the run's samples store with the user's overrides (None: no override and
    no store, the step reports the missing store); without a store, the command line alone."""
    given = {k: v for k, v in options.items() if v is not None}
    if not run.samples.exists():
        if generator is None:
            return None
        psi, layers = given.get("truncation_psi"), given.get("truncation_layers")
        return _spec(generator, predictors, psi, layers, given.get("seed", 0))
    override = SpecOverride(
        generator=ModelRef.parse(generator) if generator else None,
        predictors=tuple(ModelRef.parse(p) for p in predictors),
        options=given,
    )
    return pipeline.model_spec_of(run, override)


@app.command()
@_user_errors
def sample(
    out: Out,
    generator: Generator,
    predictor: Predictors,
    num: Annotated[int, typer.Option("--num", "-n", help="Number of latents N.")] = 10_000,
    seed: Seed = 0,
    chunk_size: Annotated[int, typer.Option(help="Latents per store chunk (work unit).")] = 1024,
    batch_size: BatchSize = None,
    wplus: Annotated[bool, typer.Option("--wplus", help="Also store truncated W+ codes.")] = False,
    truncation_psi: TruncationPsi = None,
    truncation_layers: TruncationLayers = None,
    model_seed: ModelSeed = 0,
    class_index: ClassIndex = None,
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    executor: Executor = "local",
    workers: Workers = 1,
    ray_address: RayAddress = None,
    storage_option: StorageOptions = [],
    overlap: Overlap = None,
    quiet: Quiet = False,
) -> None:
    """Sample N latents, score every image, write OUT/samples.zarr (rerun to resume).

    Example:  rescore sample -o runs/bedroom --generator stylegan=w/stylegan_bedroom256.pth
    -p places365=w/places365 -n 500000 [--executor ray --workers 8]
    """
    spec = _spec(generator, predictor, truncation_psi, truncation_layers, model_seed, class_index)
    store = pipeline.sample_step(
        _run_directory(out, storage_option),
        spec,
        _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size),
        SampleConfig(num, seed, chunk_size, _batch(batch_size, device), wplus),
        executor=_executor(executor, workers, ray_address, device, overlap),
        progress=not quiet,
    )
    typer.echo(f"samples: {store.path} ({store.num_samples} latents)")


@app.command()
@_user_errors
def fit(
    out: Out,
    semantic: Annotated[
        list[str],
        typer.Option("--semantic", "-s", help="Semantic to fit (repeatable; default all)."),
    ] = [],
    chosen_num: Annotated[
        float, typer.Option(help="Samples per class (count, or ratio <= 1).")
    ] = 2000,
    solver: Annotated[str, typer.Option(help="svc (HiGAN parity) or linear_svc (scales).")] = "svc",
    space: Annotated[str, typer.Option(help="auto, w or wp (per-layer).")] = "auto",
    seed: Seed = 0,
    storage_option: StorageOptions = [],
    quiet: Quiet = False,
) -> None:
    """Fit a linear SVM boundary per semantic into OUT/boundaries/ (.npy + .json).

    Example:  rescore fit -o runs/bedroom -s indoor_lighting -s wood --chosen-num 2000
    """
    results = pipeline.fit_step(
        _run_directory(out, storage_option),
        FitConfig(chosen_num, 0.7, solver, space, tuple(semantic), seed),  # type: ignore[arg-type]
        progress=not quiet,
    )
    for result in results:
        typer.echo(f"{result.boundary.name:32s} val acc {result.accuracy:.3f}  {result.path}")


@app.command()
@_user_errors
def rescore(
    out: Out,
    boundary: Annotated[
        list[Path],
        typer.Option(
            "--boundary",
            "-b",
            help="Boundary FILE_OR_DIR[:z|w|wp] or HiGAN boundary list .txt (repeatable; "
            "default OUT/boundaries). HiGAN/InterFaceGAN files work; :z marks Z space.",
        ),
    ] = [],
    num: Annotated[int, typer.Option("--num", "-n", help="Fresh latents K.")] = 2000,
    seed: Seed = 0,
    distance: Annotated[float, typer.Option(help="Manipulation distance lambda.")] = 2.0,
    chunk_size: Annotated[int, typer.Option(help="Latents per store chunk.")] = 256,
    batch_size: BatchSize = None,
    generator: Annotated[
        str | None,
        typer.Option(
            help="Override the generator recorded in OUT/samples.zarr (NAME[=PATH]); a plug-in "
            "recorded there must be named again."
        ),
    ] = None,
    predictor: Annotated[
        list[str], typer.Option("--predictor", "-p", help="Override the predictors.")
    ] = [],
    truncation_psi: Annotated[
        float | None, typer.Option(help="Override the recorded truncation psi.")
    ] = None,
    truncation_layers: Annotated[
        int | None, typer.Option(help="Override the recorded truncated layers.")
    ] = None,
    model_seed: Annotated[
        int | None, typer.Option(help="Override the recorded model seed.")
    ] = None,
    target_ci: Annotated[
        float | None,
        typer.Option(help="Adaptive K: draw chunks until every Delta's 95% CI half-width <= this."),
    ] = None,
    target_semantic: Annotated[
        list[str],
        typer.Option(help="Semantics the --target-ci applies to (repeatable; default all)."),
    ] = [],
    max_k: Annotated[
        int | None, typer.Option(help="Most latents adaptive K may use (default: --num).")
    ] = None,
    ci: Annotated[
        str,
        typer.Option(
            help="CI method: auto (empirical-Bernstein where the score range is known, else "
            "normal; confidence sequences under --target-ci), normal or bootstrap (seeded)."
        ),
    ] = "auto",
    eliminate: Eliminate = False,
    eliminate_semantic: EliminateSemantic = [],
    eliminate_tie: EliminateTie = 0.0,
    eliminate_paired: EliminatePaired = False,
    force_family: ForceFamily = False,
    force_store: ForceStore = False,
    prefix_reuse: PrefixReuse = True,
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    executor: Executor = "local",
    workers: Workers = 1,
    ray_address: RayAddress = None,
    storage_option: StorageOptions = [],
    overlap: Overlap = None,
    quiet: Quiet = False,
) -> None:
    """Rescore boundaries layer by layer on K fresh latents, then write the report.

    Moves each latent along each boundary at all layers and at each layer, scores every semantic,
    writes OUT/rescore.zarr and OUT/rescore.csv, then summary.json and the heatmaps.

    Examples:  rescore rescore -o runs/bedroom -n 2000 --distance 2
               rescore rescore -o runs/bedroom --target-ci 0.005 --max-k 20000
               rescore rescore -o runs/bedroom -n 2000 --eliminate
    """
    run = _run_directory(out, storage_option)
    _finite("--distance", distance)
    _at_least("--num", num, 2, " (a confidence interval needs K >= 2 latents)")
    if max_k is not None:
        _at_least("--max-k", max_k, 2, " (a confidence interval needs K >= 2 latents)")
    spec = _stored_spec(
        run,
        generator,
        predictor,
        {
            "truncation_psi": truncation_psi,
            "truncation_layers": truncation_layers,
            "seed": model_seed,
        },
    )
    if ci not in CI_METHODS:
        raise RescoreError(f"unknown --ci '{ci}'; use {', '.join(CI_METHODS)}")
    target = CiTarget(target_ci, tuple(target_semantic)) if target_ci is not None else None
    if target is None and (target_semantic or max_k):
        raise RescoreError("--target-semantic and --max-k need --target-ci VALUE")
    config = RescoreConfig(
        max_k or num,
        seed,
        distance,
        chunk_size,
        _micro_batch(batch_size, device, chunk_size),
        target,
        ci_method=ci,
        force_family=force_family,
        eliminate=_elimination(eliminate, eliminate_semantic, eliminate_tie, eliminate_paired),
        prefix_reuse=prefix_reuse,
    )
    table = pipeline.rescore_step(
        run,
        _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size),
        config,
        boundary_paths=list(boundary) or None,
        spec=spec,
        force_store=force_store,
        executor=_executor(executor, workers, ray_address, device, overlap),
        progress=not quiet,  # type: ignore[arg-type]
    )
    summary = pipeline.report_step(run, table)
    _print_summary(summary)
    finished = summary["run"]
    if finished.get("unmet_max_half_width"):
        typer.echo(
            "CI target not met (max half-width) for: "
            + ", ".join(f"{n} {w:.4g}" for n, w in finished["unmet_max_half_width"].items())
        )
    _print_outputs(run)


@app.command()
@_user_errors
def report(
    out: Out,
    ci: Annotated[
        str | None,
        typer.Option(
            help="CI method: auto, normal or bootstrap (default: the one the run recorded)."
        ),
    ] = None,
    storage_option: StorageOptions = [],
) -> None:
    """Rewrite OUT/rescore.csv, OUT/summary.json and the heatmaps from OUT/rescore.zarr.

    Example:  rescore report -o runs/bedroom
    """
    run = _run_directory(out, storage_option)
    if ci is not None and ci not in CI_METHODS:
        raise RescoreError(f"unknown --ci '{ci}'; use {', '.join(CI_METHODS)}")
    summary = pipeline.report_step(run, ci_method=ci)
    _print_summary(summary)
    _print_outputs(run)


@app.command()
@_user_errors
def condition(
    primal: Annotated[Path, typer.Argument(help="The primal boundary .npy.")],
    on: Annotated[
        list[Path], typer.Option("--on", help="Condition boundary .npy (repeatable).")
    ] = [],
    output: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the result (default: PRIMAL_DIR/conditioned/<primal>__on__<conds>)."
        ),
    ] = None,
) -> None:
    """Make a boundary orthogonal to any number of condition boundaries.

    PRIMAL is made orthogonal to every --on boundary (HiGAN stops at two) and written as a new
    boundary with the primal's name, recording the conditions in its sidecar.

    Example:  rescore condition runs/bedroom/boundaries/indoor_lighting.npy
              --on runs/bedroom/boundaries/wood.npy --on runs/bedroom/boundaries/carpet.npy
    """
    from .condition import condition_boundary, default_output

    if not on:
        raise RescoreError("no condition given; pass --on CONDITION.npy (repeatable)")
    if output is not None and output.exists() and not output.is_dir():
        raise RescoreError(f"--output {output} is a file; name a directory (new or existing)")
    target = output or default_output(primal, list(on))
    path = condition_boundary(primal, list(on), target)
    typer.echo(f"conditioned boundary: {path}\nrescore it with: rescore rescore -o DIR -b {target}")


@app.command()
@_user_errors
def project(
    out: Out,
    boundary: Annotated[
        list[Path],
        typer.Option(
            "--boundary",
            "-b",
            help="Boundary FILE_OR_DIR[:z|w|wp] or boundary list (default OUT/boundaries).",
        ),
    ] = [],
    force_store: ForceStore = False,
) -> None:
    """Signed distance of every sample to every boundary, into OUT/projections.zarr.

    Streams OUT/samples.zarr: `distance` [N, M] for W boundaries; `distance_wp` [N, M, L] for
    W+ boundaries; `distance_z` [N, M] for Z boundaries.

    Example:  rescore project -o runs/bedroom
    """
    from .boundary import check_store, load_boundaries
    from .fit import identity_digest
    from .project import project_samples
    from .sample import open_samples

    run = RunDirectory(out).ensure_writable()
    samples = open_samples(run.samples)
    boundaries = load_boundaries(list(boundary) or [run.boundaries])
    check_store(boundaries, identity_digest(samples), force=force_store)
    store = project_samples(samples, boundaries, run.projections)
    typer.echo(f"projections: {store.path}")


@app.command()
@_user_errors
def grid(
    out: Out,
    boundary: Annotated[
        Path, typer.Option("--boundary", "-b", help="Boundary FILE[:z|w|wp] to show.")
    ],
    layers: Annotated[
        str | None,
        typer.Option(
            help="Layers to move: all, 3, 0-4 or 0,2,5-7 (default: the file's recommended "
            "manipulate_layers, else all)."
        ),
    ] = None,
    num: Annotated[int, typer.Option("--num", "-n", help="Latents (rows).")] = 4,
    steps: Annotated[int, typer.Option(help="Columns from -distance to +distance.")] = 5,
    distance: Annotated[float, typer.Option(help="Largest distance.")] = 3.0,
    seed: Seed = 0,
    device: Device = "auto",
    force_family: ForceFamily = False,
    force_store: ForceStore = False,
    generator: Annotated[
        str | None,
        typer.Option(
            help="Generator NAME[=PATH] (default: the one OUT/samples.zarr recorded; a plug-in "
            "must be named again)."
        ),
    ] = None,
    predictor: Annotated[
        list[str], typer.Option("--predictor", "-p", help="Predictors (default: recorded).")
    ] = [],
) -> None:
    """Render a manipulation grid (rows: latents, columns: distances) to OUT/grids/.

    Uses the models recorded in OUT/samples.zarr.

    Example:  rescore grid -o runs/bedroom -b runs/bedroom/boundaries/indoor_lighting.npy
              --layers 6-11
    """
    from .boundary import check_family, check_store, load_boundary, parse_boundary_argument
    from .fit import identity_digest
    from .grid import manipulation_grid, parse_layers, save_grid
    from .sample import open_samples
    from .spec import open_model_session

    _at_least("--num", num, 1)
    _at_least("--steps", steps, 1)
    _finite("--distance", distance)
    run_dir = RunDirectory(out)
    spec = _stored_spec(run_dir, generator, predictor, {})
    spec = spec or pipeline.model_spec_of(run_dir)  # no store: its error names the fix
    run_dir.ensure_writable()
    chosen = load_boundary(*parse_boundary_argument(boundary))
    check_store([chosen], identity_digest(open_samples(run_dir.samples)), force=force_store)
    layers = layers or chosen.manipulate_layers or "all"
    with open_model_session(spec, BackendSpec("torch", device)) as session:
        family = session.geometry.family
        check_family([chosen], family, alias=spec.generator.name, force=force_family)
        mask = parse_layers(layers, session.geometry.num_layers)
        image = manipulation_grid(
            session, chosen, mask, num_latents=num, steps=steps, distance=distance, seed=seed
        )
    typer.echo(f"grid: {save_grid(image, run_dir.root / 'grids', chosen, layers)}")


@app.command(name="export")
@_user_errors
def export_command(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Directory for the ONNX files.", parser=_out_value),
    ],
    generator: Generator,
    predictor: Predictors,
    part: Annotated[
        list[str],
        typer.Option(
            help="mapping, synthesis, predictors, fused (repeatable; default all). Predictors "
            "that read generator features (lineargan) are exported only inside fused. staged: "
            "the prefix-reuse graphs (stage_<e> per synthesis stage, scorer), on request."
        ),
    ] = [],
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 18).")] = 18,
    truncation_psi: TruncationPsi = None,
    truncation_layers: TruncationLayers = None,
    model_seed: ModelSeed = 0,
    class_index: ClassIndex = None,
) -> None:
    """Export the models and the fused generate-and-score pass to ONNX.

    Writes the mapping network, the synthesis network, each predictor and the fused pass (dynamic
    batch axis), each with a JSON sidecar. Use the files with --onnx-dir on sample/rescore/run
    (onnxruntime or tensorrt backends).

    Example:  rescore export -o onnx/bedroom --generator stylegan=w/g.pth -p places365=w/places365
    """
    from rescore.export.onnx import ExportSettings, export_onnx
    from rescore.models.registry import build_generator, build_predictor

    from .atomic import clean_leftovers

    spec = _spec(generator, predictor, truncation_psi, truncation_layers, model_seed, class_index)
    clean_leftovers(out)
    result = export_onnx(
        build_generator(spec.generator, spec.options),
        [build_predictor(ref) for ref in spec.predictors],
        out,
        settings=ExportSettings(opset=opset),
        parts=tuple(part) or None,
        sources=spec.identity(),
    )
    for name, graph in result.graphs.items():
        typer.echo(f"{name:14s} {graph.path}")


@app.command()
@_user_errors
def run(
    out: Out,
    generator: Generator,
    predictor: Predictors,
    num: Annotated[int, typer.Option("--num", "-n", help="Latents N to sample.")] = 10_000,
    rescore_num: Annotated[int, typer.Option(help="Fresh latents K to rescore.")] = 2000,
    semantic: Annotated[list[str], typer.Option("--semantic", "-s", help="Semantics to fit.")] = [],
    chosen_num: Annotated[float, typer.Option(help="Samples per class.")] = 2000,
    solver: Annotated[str, typer.Option(help="svc or linear_svc.")] = "svc",
    wplus: Annotated[bool, typer.Option("--wplus", help="Per-layer (W+) boundaries.")] = False,
    distance: Annotated[float, typer.Option(help="Manipulation distance lambda.")] = 2.0,
    seed: Seed = 0,
    batch_size: BatchSize = None,
    truncation_psi: TruncationPsi = None,
    truncation_layers: TruncationLayers = None,
    model_seed: ModelSeed = 0,
    class_index: ClassIndex = None,
    prefix_reuse: PrefixReuse = True,
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    executor: Executor = "local",
    workers: Workers = 1,
    ray_address: RayAddress = None,
    storage_option: StorageOptions = [],
    overlap: Overlap = None,
    quiet: Quiet = False,
    eliminate: Eliminate = False,
    eliminate_semantic: EliminateSemantic = [],
    eliminate_tie: EliminateTie = 0.0,
    eliminate_paired: EliminatePaired = False,
) -> None:
    """sample -> fit -> rescore -> report into one directory.

    With --executor ray, sampling and re-scoring run on Ray actors.

    Example:  rescore run -o runs/bedroom --generator stylegan=w/g.pth -p places365=w/places365
    """
    _finite("--distance", distance)
    _at_least("--rescore-num", rescore_num, 2, " (a confidence interval needs K >= 2 latents)")
    spec = _spec(generator, predictor, truncation_psi, truncation_layers, model_seed, class_index)
    run_dir = _run_directory(out, storage_option)
    summary = pipeline.run_all(
        run_dir,
        spec,
        _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size),
        SampleConfig(num, seed, 1024, _batch(batch_size, device), wplus),
        FitConfig(chosen_num, 0.7, solver, "auto", tuple(semantic), seed),  # type: ignore[arg-type]
        RescoreConfig(
            rescore_num,
            seed,
            distance,
            *_grid(256, _batch(batch_size, device)),
            eliminate=_elimination(eliminate, eliminate_semantic, eliminate_tie, eliminate_paired),
            prefix_reuse=prefix_reuse,
        ),
        executor=_executor(executor, workers, ray_address, device, overlap),
        progress=not quiet,
    )
    _print_summary(summary)
    _print_outputs(run_dir)


@app.command()
@_user_errors
def check(out: Out, storage_option: StorageOptions = []) -> None:
    """Read every chunk of every store of a run; mark damaged chunks for recomputation.

    Damaged chunks (checksum mismatch, unreadable, missing) get their ledger entries reset, so
    rerunning the command that wrote the store (sample, rescore, project) recomputes exactly
    them. Exits 1 when damage was found.

    Example:  rescore check -o runs/bedroom && rescore sample -o runs/bedroom ...
    """
    from .check import check_run

    reports = check_run(_run_directory(out, storage_option))
    damaged = False
    for report in reports:
        typer.echo(report.describe())
        damaged |= not report.ok
    if damaged:
        raise typer.Exit(1)


@app.command()
@_user_errors
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory.", parser=_out_value)
    ] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="Tiny sizes (seconds), for smoke tests.")] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """`run` on the embedded synthetic scene model, sized to finish in a few minutes on 2 cores.

    The synthetic model's factors are driven by known layer groups (layout early, objects in the
    middle, attributes later, colour last); the heatmap shows whether rescoring recovers them.

    Example:  rescore demo --out runs/demo
    """
    from rescore.models.synthetic import build_synthetic

    spec = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),))
    n, chosen, k = (800, 150, 48) if quick else (20_000, 2000, 2000)
    summary = pipeline.run_all(
        RunDirectory(out),
        spec,
        BackendSpec("auto", device),
        SampleConfig(n, 0, 1000 if not quick else 400, 200),
        FitConfig(chosen, 0.7, "svc", "w"),
        RescoreConfig(k, 0, 2.0, *_grid(200 if not quick else 48, 200 if not quick else 48)),
        progress=not quiet,
    )
    _print_summary(summary)
    truth = build_synthetic().factor_layers
    typer.echo(
        "ground truth layer groups: "
        + ", ".join(f"{name} {list(layers)}" for name, layers in truth.items())
    )
    from .naming import NameConfig

    naming = pipeline.unsupervised_step(
        RunDirectory(out),
        spec,
        BackendSpec("auto", device),
        NameConfig(4 if quick else 8, 3.0, 0, 8, 8, grids=0),
        progress=not quiet,
    )
    typer.echo("\nunsupervised (SeFa) directions, named by re-scoring:")
    _print_names(naming)
    _print_outputs(RunDirectory(out))
    typer.echo(f"names:   {out / 'names.csv'}\nnames picture: {out / 'names.png'}")


directions_app = typer.Typer(
    no_args_is_help=True,
    help="Directions without labels (SeFa, GANSpace PCA) into OUT/directions/<method>/.",
)
app.add_typer(directions_app, name="directions")
DirectionCount = Annotated[int, typer.Option("--num", "-n", help="Number of directions k.")]


@directions_app.command(name="sefa")
@_user_errors
def directions_sefa(
    out: Out,
    layers: Annotated[str, typer.Option(help="Layer codes to factorize: all, 3, 0-4.")] = "all",
    num: DirectionCount = 10,
    generator: Annotated[
        str | None,
        typer.Option(help="Generator NAME[=CHECKPOINT] (default: the one OUT/samples.zarr used)."),
    ] = None,
    truncation_psi: TruncationPsi = None,
    truncation_layers: TruncationLayers = None,
    model_seed: ModelSeed = 0,
) -> None:
    """SeFa: eigenvectors of the stacked, normalised weights that read the layer codes.

    Writes OUT/directions/sefa/sefa_<i>.npy + .json (W boundaries, strongest first); any command
    that takes boundaries (rescore, grid, condition, project, name) takes them.

    Example:  rescore directions sefa -o runs/bedroom --layers 0-5 --num 5
    """
    from .directions import sefa_step

    options = GeneratorOptions(truncation_psi, truncation_layers, seed=model_seed)
    ref = ModelRef.parse(generator) if generator else None
    paths = sefa_step(out, ref, options, layers, num)
    typer.echo(f"sefa: {len(paths)} directions in {paths[0].parent}")


@directions_app.command(name="pca")
@_user_errors
def directions_pca(
    out: Out,
    num: DirectionCount = 10,
    space: Annotated[str, typer.Option(help="w, or wp (needs a --wplus samples store).")] = "w",
) -> None:
    """GANSpace: principal components of the codes in OUT/samples.zarr, streamed.

    Writes OUT/directions/pca/pca_<i>.npy + .json with the explained variance.

    Example:  rescore directions pca -o runs/bedroom --num 10
    """
    from .directions import pca_step

    paths = pca_step(out, space, num)
    typer.echo(f"pca: {len(paths)} directions in {paths[0].parent}")


@app.command()
@_user_errors
def name(
    out: Out,
    boundary: Annotated[
        list[Path],
        typer.Option(
            "--boundary",
            "-b",
            help="Direction .npy file or directory (repeatable; default every "
            "OUT/directions/<method>/).",
        ),
    ] = [],
    num: Annotated[int, typer.Option("--num", "-n", help="Fresh latents K.")] = 200,
    distance: Annotated[float, typer.Option(help="Move by +lambda and -lambda.")] = 3.0,
    min_effect: Annotated[
        float, typer.Option(help="Smallest |effect| (in semantic spreads) that names.")
    ] = 0.2,
    top: Annotated[int, typer.Option(help="Most named semantics per direction.")] = 3,
    seed: Seed = 0,
    chunk_size: Annotated[int, typer.Option(help="Latents per store chunk.")] = 100,
    batch_size: BatchSize = None,
    generator: Annotated[
        str | None,
        typer.Option(help="Generator NAME[=PATH] (default: the one OUT/samples.zarr used)."),
    ] = None,
    predictor: Annotated[
        list[str], typer.Option("--predictor", "-p", help="Predictors (with --generator).")
    ] = [],
    model_seed: ModelSeed = 0,
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    quiet: Quiet = False,
) -> None:
    """Name unsupervised directions by re-scoring them at +lambda and -lambda.

    Every semantic is scored at all layers and at each layer; writes OUT/names.csv,
    OUT/names.json, OUT/names.png and grids of the top named directions in OUT/grids/.

    Example:  rescore name -o runs/bedroom -b runs/bedroom/directions/sefa -n 500
    """
    from .naming import NameConfig, name_step

    run = RunDirectory(out)
    spec = _spec(generator, predictor, None, None, model_seed) if generator else None
    paths = list(boundary) or sorted(p for p in (out / "directions").glob("*") if p.is_dir())
    if not paths:
        raise RescoreError(
            f"no directions given and none in {out / 'directions'}; run `rescore directions "
            f"sefa -o {out}` first or pass -b PATH"
        )
    config = NameConfig(
        num,
        distance,
        seed,
        chunk_size,
        _micro_batch(batch_size, device, chunk_size),
        top,
        min_effect,
    )
    backend_spec = _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size)
    naming = name_step(run, backend_spec, config, paths, spec=spec, progress=not quiet)
    _print_names(naming)
    typer.echo(f"\nnames: {out / 'names.csv'}\npicture: {out / 'names.png'}")


@app.command()
@_user_errors
def lineargan(
    out: Out,
    generator: Annotated[
        str | None,
        typer.Option(help="Generator NAME[=CHECKPOINT] (default: the one OUT/samples.zarr used)."),
    ] = None,
    layers: Annotated[str, typer.Option(help="Feature layers: all, 3, 0-4 or 0,2,5-7.")] = "all",
    segmenter: Annotated[
        str, typer.Option(help="synthetic (the renderer's truth) or package.module:factory.")
    ] = "synthetic",
    num: Annotated[int, typer.Option("--num", "-n", help="Labelled images.")] = 8,
    resolution: Annotated[
        int | None, typer.Option(help="Segmentation resolution (default: the labels').")
    ] = None,
    seed: Seed = 0,
    model_seed: ModelSeed = 0,
) -> None:
    """LinearGAN: fit a linear map from generator features to a segmentation.

    Writes OUT/lineargan/lse.npz + lse.json; use it as a predictor that reads generator
    features instead of pixels (per-class area fractions and centroids):
    --predictor lineargan=OUT/lineargan/lse.npz.

    Example:  rescore lineargan -o runs/demo --generator synthetic --layers 1,3,5,7,9
    """
    import numpy as np

    from rescore.models.lineargan import fit_lse_file
    from rescore.models.registry import build_generator

    from .grid import parse_layers

    if generator:
        ref, options = ModelRef.parse(generator), GeneratorOptions(seed=model_seed)
    else:
        recorded = pipeline.model_spec_of(RunDirectory(out))
        ref, options = recorded.generator, recorded.options
    model = build_generator(ref, options)
    chosen = [int(i) for i in np.flatnonzero(parse_layers(layers, model.num_layers))]
    if num < 1:
        raise RescoreError(f"--num must be at least 1, got {num}")
    path = fit_lse_file(
        model,
        out / "lineargan" / "lse.npz",
        layers=chosen,
        segmenter=segmenter,
        num_images=num,
        seed=seed,
        resolution=resolution,
        meta={"generator": {"name": ref.name, "sha256": ref.digest()}},
    )
    typer.echo(f"lineargan: {path}\nuse it with: --predictor lineargan={path}")


def _print_names(naming) -> None:
    for direction in naming.directions:
        effects = naming.named[direction]
        text = ", ".join(
            f"{e.sign}{e.semantic} (layers {e.layers}, effect {e.effect:+.2f})" for e in effects
        )
        typer.echo(f"{direction:16s} {text or 'unnamed'}")


def _print_summary(summary: dict) -> None:
    if not summary["most_relevant"]:
        unmatched = summary.get("unmatched_boundaries", [])
        typer.echo(
            f"no boundary is named after a scored semantic (boundaries: "
            f"{', '.join(unmatched[:5]) or 'none'}); name each boundary after a predictor "
            f"semantic (file <semantic>.npy, or '(<semantic>, w): path' in a boundary list)"
        )
        return
    typer.echo(
        f"{'semantic':28s} {'K':>6s} {'delta(all)':>10s} {'peak layer':>10s} "
        f"{'peak delta':>10s}  peak set (simultaneous 95%)"
    )
    for name in summary["most_relevant"]:
        entry = summary["boundaries"][name]
        if entry["no_effect"]:
            peak = f"{'-':>10s} {'-':>10s}  no effect"
        elif entry["peak_layer"] is None:  # a Z boundary: all layers only
            peak = f"{'-':>10s} {'-':>10s}  all layers only (Z space)"
        else:
            peak = (
                f"{entry['peak_layer']:10d} {entry['peak_delta']:10.4f}  "
                f"{entry['indistinguishable_layers']}"
            )
        typer.echo(f"{name:28s} {entry['k']:6d} {entry['delta_all_layers']:10.4f} {peak}")
    if summary.get("elimination"):
        images = summary["images"]
        typer.echo(
            f"elimination: {images['used']} images scored, a fixed-K run {images['fixed_k']} "
            f"(saved {images['saved_fraction']:.0%}); K of each layer: layer_k in summary.json"
        )


def _print_outputs(run: RunDirectory) -> None:
    typer.echo(
        f"\nheatmap: {run.heatmap}\ncross effects: {run.cross_effects}\n"
        f"table:   {run.table}\nsummary: {run.summary}\nsamples: {run.samples}"
        + (f"\nboundaries: {run.boundaries}" if run.boundaries.is_dir() else "")
    )


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="rescore: %(message)s")
    app(prog_name="rescore")


if __name__ == "__main__":
    sys.exit(main())
