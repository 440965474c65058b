"""Sample-and-score and layer-wise re-scoring: HiGAN-style vs today's default vs the new default.

StyleGAN-256 + Places365 with random weights written and read back in the published formats. Three
paths run in this process, side by side, after a warm-up, on the same codes:

    HiGAN-style      `higan_style.naive_scores`: batches of 4, uint8 images to the host, a PIL
                     resize per image, then the predictor (torch eager)
    today's default  what `auto` ran before issue 12 on the CPU: ONNX Runtime (fused pass),
                     manipulate + score for re-scoring
    new default      what `auto` runs now, and `score_layer_sets` for re-scoring (generator
                     prefix reuse on the micro-batch grid, as the engine runs it: on ONNX
                     Runtime through the staged graphs of `export/staged.py`)
    torch + reuse    torch eager with generator-prefix reuse in re-scoring (`export/prefix.py`)

Sample-and-score scores fresh codes; re-scoring moves each latent along one boundary at all layers
and at each layer (K = L + 1 layer sets) and scores the originals too. Throughput is also given as
% of the machine's FMA peak, measured in this run (`ceilings.py`), for the FLOPs the pass runs:
wall clock, and per CPU-second the process got (the summary's figure: contention-robust).
The last line is the summary:

    summary: sample+score A.AAx, rescoring B.BBx vs HiGAN-style, C% of FMA peak

    python bench/bench_throughput.py            # ~10 min on 2 cores
    python bench/bench_throughput.py --quick    # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ceilings import available_cpus, measure_ceilings
from higan_style import naive_scores
from workloads import relative_error, stylegan_places

from rescore.engine.scoring import score_codes
from rescore.export.backends import BackendSpec, open_session
from rescore.export.session import score_layer_sets
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate

CPU_SECONDS: dict[int, float] = {}  # id(result) -> process CPU seconds the call used


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of one call; its process CPU time goes to `CPU_SECONDS`."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    CPU_SECONDS[id(result)] = time.process_time() - cpu
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (a few minutes)")
    parser.add_argument("--images", type=int, default=None, help="sample+score images per path")
    parser.add_argument("--latents", type=int, default=None, help="re-scored latents per path")
    parser.add_argument("--batch-size", type=int, default=4, help="rescore's batch size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    images = args.images or (4 if args.quick else 32)
    latents = args.latents or (1 if args.quick else 2)
    batch = args.batch_size
    cpu = torch.device("cpu")
    torch.manual_seed(0)

    ceilings = measure_ceilings()
    with tempfile.TemporaryDirectory() as tmp:
        workload = stylegan_places(Path(tmp), images=max(images, latents))
        generator, predictor = workload.generator, workload.predictors[0]
        cache = Path(tmp) / "cache"
        today = open_session(
            generator, [predictor], BackendSpec("onnxruntime", "cpu", cache_dir=cache)
        )
        new = open_session(
            generator, [predictor], BackendSpec("auto", "cpu", cache_dir=cache, max_batch=batch)
        )
        eager = open_session(generator, [predictor], BackendSpec("torch", "cpu"))
        geometry = today.geometry
        wp = workload.wp[:images]
        print(
            f"{datetime.date.today()}, {available_cpus()} CPUs, torch {torch.__version__}; "
            f"{workload.label} (random weights), {workload.flops / 1e9:.1f} GFLOP/image; "
            f"today's default: {today.info.backend}, new default: {new.info.backend}, "
            f"batch {batch}; HiGAN-style: torch eager, batches of 4"
        )
        print(ceilings.report())

        # warm-up every path (first-run allocations, compiled shapes)
        naive_scores(generator, predictor, wp[:1], cpu)
        score_codes(today, wp[:batch], batch)
        score_codes(new, wp[:batch], batch)
        score_codes(eager, wp[:1], 1)

        # 1. sample-and-score: fresh codes through the whole pass
        sample = {
            "HiGAN-style": timed(lambda: naive_scores(generator, predictor, wp, cpu)),
            "today's default": timed(lambda: score_codes(today, wp, batch)),
            "new default": timed(lambda: score_codes(new, wp, batch)),
        }

        # 2. layer-wise re-scoring: one boundary, all layers + each layer, plus the originals
        rng = np.random.default_rng(0)
        direction = rng.normal(size=(1, geometry.num_layers, geometry.w_dim))
        direction = (direction / np.linalg.norm(direction, axis=-1, keepdims=True)).astype(
            np.float32
        )
        layer_sets = layer_sets_all_and_each(geometry.num_layers)
        chosen = workload.wp[:latents]
        flat = manipulate(chosen, direction, layer_sets, 2.0).reshape(
            -1, geometry.num_layers, geometry.w_dim
        )
        scored = len(flat) + latents

        # the reuse path runs new batch shapes (one per entry stage) and, on ONNX Runtime, its
        # staged graphs (exported into the cache on first use): warm them up too
        score_layer_sets(eager, chosen[:1], direction, layer_sets, 2.0, batch)
        start = time.perf_counter()
        score_layer_sets(new, chosen[:1], direction, layer_sets, 2.0, batch)
        print(f"new default's prefix-reuse warm-up (staged graph export): "
              f"{time.perf_counter() - start:.0f} s")  # fmt: skip

        def naive_rescore():
            return naive_scores(generator, predictor, np.concatenate([chosen, flat]), cpu)

        def session_rescore(session, reuse: bool):
            original = score_codes(session, chosen, batch)
            if reuse:
                moved = score_layer_sets(session, chosen, direction, layer_sets, 2.0, batch)
            else:
                moved = score_codes(session, flat, batch)
            return np.concatenate([original, moved.reshape(len(flat), -1)])

        rescore = {
            "HiGAN-style": timed(naive_rescore),
            "today's default": timed(lambda: session_rescore(today, reuse=False)),
            "new default": timed(lambda: session_rescore(new, reuse=True)),
            "torch + reuse": timed(lambda: session_rescore(eager, reuse=True)),
        }

    reference_sample, reference_rescore = sample["HiGAN-style"][1], rescore["HiGAN-style"][1]
    base_sample, base_rescore = sample["HiGAN-style"][0], rescore["HiGAN-style"][0]
    print(
        "\n| path | sample+score img/s | vs HiGAN-style | % FMA peak (wall / per CPU-s) "
        "| rescoring s/latent "
        "| vs HiGAN-style | max rel diff |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in rescore:
        r_time, r_scores = rescore[path]
        diff = relative_error(r_scores, reference_rescore)
        sampled = "| — | — | — "  # prefix reuse changes re-scoring only
        if path in sample:
            s_time, s_scores = sample[path]
            rate = images / s_time
            diff = max(diff, relative_error(s_scores, reference_sample))
            per_cpu = ceilings.fraction_of_core_peak(
                images * workload.flops, CPU_SECONDS[id(s_scores)]
            )
            sampled = (
                f"| {rate:.2f} | {base_sample / s_time:.2f}x | "
                f"{ceilings.fraction_of_fma(rate * workload.flops):.1%} / {per_cpu:.1%} "
            )
        print(
            f"| {path} {sampled}| {r_time / latents:.2f} | {base_rescore / r_time:.2f}x | "
            f"{diff:.1e} |"
        )
    today_key, new_key = "today's default", "new default"
    print(
        f"({images} images for sample+score; {latents} latent(s) x {len(layer_sets)} layer sets "
        f"+ originals = {scored} scored images for re-scoring; new default vs today's: "
        f"sample+score {sample[today_key][0] / sample[new_key][0]:.2f}x, "
        f"rescoring {rescore[today_key][0] / rescore[new_key][0]:.2f}x)"
    )
    # % of FMA peak per CPU-second the pass got: on a shared machine the wall-clock figure
    # compares the pass with an FMA probe that ran under another load
    new_time, new_scores = sample[new_key]
    peak = ceilings.fraction_of_core_peak(images * workload.flops, CPU_SECONDS[id(new_scores)])
    print(
        f"summary: sample+score {base_sample / new_time:.2f}x, "
        f"rescoring {base_rescore / rescore[new_key][0]:.2f}x vs HiGAN-style, "
        f"{peak:.0%} of FMA peak"
    )


if __name__ == "__main__":
    main()
