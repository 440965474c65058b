"""The `rescore` command line: one function per command, each a thin call into `pipeline`."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from rescore.export.backends import BackendSpec
from rescore.models.errors import RescoreError
from rescore.models.registry import GeneratorOptions, ModelRef

from . import pipeline
from .fit import FitConfig
from .layout import RunDirectory
from .rescore import CiTarget, RescoreConfig
from .sample import SampleConfig
from .spec import ModelSpec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rescore: layer-wise semantic analysis of GANs (HiGAN re-scoring at scale).\n\n"
    "Quick start:  rescore demo --out runs/demo",
)

Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory (created if missing).")]
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


def _user_errors(command):
    """Turn user mistakes into one line on stderr and exit code 2; Ctrl-C into 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RescoreError as error:
            typer.echo(f"rescore: error: {error}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("rescore: interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


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


def _backend_spec(
    backend: str,
    device: str,
    precision: str,
    cache_dir: Path | None,
    onnx_dir: Path | None,
    batch_size: int | None,
) -> BackendSpec:
    max_batch = _batch(batch_size, device)
    return BackendSpec(backend, device, precision, cache_dir, onnx_dir, max_batch=max_batch)


def _spec(
    generator: str, predictors: list[str], psi: float | None, layers: int | None, seed: int
) -> ModelSpec:
    if not predictors:
        raise RescoreError("no predictor given; pass --predictor NAME[=PATH] (e.g. places365=DIR)")
    return ModelSpec(
        generator=ModelRef.parse(generator),
        predictors=tuple(ModelRef.parse(p) for p in predictors),
        options=GeneratorOptions(truncation_psi=psi, truncation_layers=layers, seed=seed),
    )


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
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    quiet: Quiet = False,
) -> None:
    """Sample N latents, score every image, write OUT/samples.zarr (rerun to resume).

    Example:  rescore sample -o runs/bedroom --generator stylegan=w/stylegan_bedroom256.pth
    -p places365=w/places365 -n 500000
    """
    spec = _spec(generator, predictor, truncation_psi, truncation_layers, model_seed)
    store = pipeline.sample_step(
        RunDirectory(out),
        spec,
        _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size),
        SampleConfig(num, seed, chunk_size, _batch(batch_size, device), wplus),
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
    quiet: Quiet = False,
) -> None:
    """Fit a linear SVM boundary per semantic into OUT/boundaries/ (.npy + .json).

    Example:  rescore fit -o runs/bedroom -s indoor_lighting -s wood --chosen-num 2000
    """
    results = pipeline.fit_step(
        RunDirectory(out),
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
            help="Boundary .npy file or directory (repeatable; default "
            "OUT/boundaries). HiGAN/InterFaceGAN files work.",
        ),
    ] = [],
    num: Annotated[int, typer.Option("--num", "-n", help="Fresh latents K.")] = 2000,
    seed: Seed = 0,
    distance: Annotated[float, typer.Option(help="Manipulation distance lambda.")] = 2.0,
    chunk_size: Annotated[int, typer.Option(help="Latents per store chunk.")] = 256,
    batch_size: BatchSize = None,
    generator: Annotated[
        str | None,
        typer.Option(help="Override the generator recorded in OUT/samples.zarr (NAME[=PATH])."),
    ] = None,
    predictor: Annotated[
        list[str], typer.Option("--predictor", "-p", help="Override the predictors.")
    ] = [],
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
    ci: Annotated[str, typer.Option(help="CI method: normal or bootstrap (seeded).")] = "normal",
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    quiet: Quiet = False,
) -> None:
    """Rescore boundaries layer by layer on K fresh latents, then write the report.

    Moves each latent along each boundary at all layers and at each layer, scores every semantic,
    writes OUT/rescore.zarr and OUT/rescore.csv, then summary.json and the heatmaps.

    Examples:  rescore rescore -o runs/bedroom -n 2000 --distance 2
               rescore rescore -o runs/bedroom --target-ci 0.005 --max-k 20000
    """
    run = RunDirectory(out)
    spec = None
    if generator:
        spec = _spec(generator, predictor, None, None, 0)
    if ci not in ("normal", "bootstrap"):
        raise RescoreError(f"unknown --ci '{ci}'; use normal or bootstrap")
    target = CiTarget(target_ci, tuple(target_semantic)) if target_ci is not None else None
    if target is None and (target_semantic or max_k):
        raise RescoreError("--target-semantic and --max-k need --target-ci VALUE")
    config = RescoreConfig(
        max_k or num, seed, distance, chunk_size, _batch(batch_size, device), target
    )
    table = pipeline.rescore_step(
        run,
        _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size),
        config,
        boundary_paths=list(boundary) or None,
        spec=spec,
        ci_method=ci,
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
def report(out: Out) -> None:
    """Rewrite OUT/summary.json and the heatmaps from OUT/rescore.zarr.

    Example:  rescore report -o runs/bedroom
    """
    run = RunDirectory(out)
    summary = pipeline.report_step(run)
    _print_summary(summary)
    _print_outputs(run)


@app.command()
@_user_errors
def condition(
    primal: Annotated[Path, typer.Argument(help="The primal boundary .npy.")],
    on: Annotated[list[Path], typer.Option("--on", help="Condition boundary .npy (repeatable).")],
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
            "--boundary", "-b", help="Boundary file or directory (default OUT/boundaries)."
        ),
    ] = [],
) -> None:
    """Signed distance of every sample to every boundary, into OUT/projections.zarr.

    Streams OUT/samples.zarr: `distance` [N, M] for W boundaries; `distance_wp` [N, M, L] for
    W+ boundaries.

    Example:  rescore project -o runs/bedroom
    """
    from .boundary import load_boundaries
    from .project import project_samples
    from .sample import open_samples

    run = RunDirectory(out).ensure_writable()
    store = project_samples(
        open_samples(run.samples),
        load_boundaries(list(boundary) or [run.boundaries]),
        run.projections,
    )
    typer.echo(f"projections: {store.path}")


@app.command()
@_user_errors
def grid(
    out: Out,
    boundary: Annotated[Path, typer.Option("--boundary", "-b", help="Boundary .npy to show.")],
    layers: Annotated[str, typer.Option(help="Layers to move: all, 3, 0-4 or 0,2,5-7.")] = "all",
    num: Annotated[int, typer.Option("--num", "-n", help="Latents (rows).")] = 4,
    steps: Annotated[int, typer.Option(help="Columns from -distance to +distance.")] = 5,
    distance: Annotated[float, typer.Option(help="Largest distance.")] = 3.0,
    seed: Seed = 0,
    device: Device = "auto",
) -> None:
    """Render a manipulation grid (rows: latents, columns: distances) to OUT/grids/.

    Uses the models recorded in OUT/samples.zarr.

    Example:  rescore grid -o runs/bedroom -b runs/bedroom/boundaries/indoor_lighting.npy
              --layers 6-11
    """
    from .boundary import load_boundary
    from .grid import manipulation_grid, parse_layers, save_grid
    from .spec import open_model_session

    run_dir = RunDirectory(out).ensure_writable()
    chosen = load_boundary(boundary)
    with open_model_session(
        pipeline.model_spec_of(run_dir), BackendSpec("torch", device)
    ) as session:
        mask = parse_layers(layers, session.geometry.num_layers)
        image = manipulation_grid(
            session, chosen, mask, num_latents=num, steps=steps, distance=distance, seed=seed
        )
    typer.echo(f"grid: {save_grid(image, run_dir.root / 'grids', chosen, layers)}")


@app.command(name="export")
@_user_errors
def export_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the ONNX files.")],
    generator: Generator,
    predictor: Predictors,
    part: Annotated[
        list[str],
        typer.Option(help="mapping, synthesis, predictors, fused (repeatable; default all)."),
    ] = [],
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 18).")] = 18,
    truncation_psi: TruncationPsi = None,
    truncation_layers: TruncationLayers = None,
    model_seed: ModelSeed = 0,
) -> None:
    """Export the models and the fused generate-and-score pass to ONNX.

    Writes the mapping network, the synthesis network, each predictor and the fused pass (dynamic
    batch axis), each with a JSON sidecar. Use the files with --onnx-dir on sample/rescore/run
    (onnxruntime or tensorrt backends).

    Example:  rescore export -o onnx/bedroom --generator stylegan=w/g.pth -p places365=w/places365
    """
    from rescore.export.onnx import PARTS, ExportSettings, export_onnx
    from rescore.models.registry import build_generator, build_predictor

    spec = _spec(generator, predictor, truncation_psi, truncation_layers, model_seed)
    result = export_onnx(
        build_generator(spec.generator, spec.options),
        [build_predictor(ref) for ref in spec.predictors],
        out,
        settings=ExportSettings(opset=opset),
        parts=tuple(part) or PARTS,
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
    backend: Backend = "auto",
    device: Device = "auto",
    precision: Precision = "fp32",
    cache_dir: CacheDir = None,
    onnx_dir: OnnxDir = None,
    quiet: Quiet = False,
) -> None:
    """sample -> fit -> rescore -> report into one directory.

    Example:  rescore run -o runs/bedroom --generator stylegan=w/g.pth -p places365=w/places365
    """
    spec = _spec(generator, predictor, truncation_psi, truncation_layers, model_seed)
    summary = pipeline.run_all(
        RunDirectory(out),
        spec,
        _backend_spec(backend, device, precision, cache_dir, onnx_dir, batch_size),
        SampleConfig(num, seed, 1024, _batch(batch_size, device), wplus),
        FitConfig(chosen_num, 0.7, solver, "auto", tuple(semantic), seed),  # type: ignore[arg-type]
        RescoreConfig(rescore_num, seed, distance, 256, _batch(batch_size, device)),
        progress=not quiet,
    )
    _print_summary(summary)
    _print_outputs(RunDirectory(out))


@app.command()
@_user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
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
        RescoreConfig(k, 0, 2.0, 200 if not quick else 48, 200),
        progress=not quiet,
    )
    _print_summary(summary)
    truth = build_synthetic().factor_layers
    typer.echo(
        "ground truth layer groups: "
        + ", ".join(f"{name} {list(layers)}" for name, layers in truth.items())
    )
    _print_outputs(RunDirectory(out))


def _print_summary(summary: dict) -> None:
    typer.echo(
        f"{'semantic':28s} {'K':>6s} {'delta(all)':>10s} {'peak layer':>10s} "
        f"{'peak delta':>10s}  indistinguishable"
    )
    for name in summary["most_relevant"]:
        entry = summary["boundaries"][name]
        typer.echo(
            f"{name:28s} {entry['k']:6d} {entry['delta_all_layers']:10.4f} "
            f"{entry['peak_layer']:10d} {entry['peak_delta']:10.4f}  "
            f"{entry['indistinguishable_layers']}"
        )


def _print_outputs(run: RunDirectory) -> None:
    typer.echo(
        f"\nheatmap: {run.heatmap}\ncross effects: {run.cross_effects}\n"
        f"table:   {run.table}\nsummary: {run.summary}\nsamples: {run.samples}\n"
        f"boundaries: {run.boundaries}"
    )


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="rescore: %(message)s")
    app(prog_name="rescore")


if __name__ == "__main__":
    sys.exit(main())
