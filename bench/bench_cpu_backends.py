"""CPU backends side by side on the same exported fused graph: which one should `auto` run?

For each model (StyleGAN-256 + Places365 with random weights in the published formats, and the
synthetic scene model) every CPU candidate scores the same codes at each batch size, after a
warm-up: torch eager (the reference), torch.compile (inductor, the `compiled` backend), ONNX
Runtime at each graph-optimization level (`all` adds ORT's NCHWc blocked-layout transform, its
CPU form of NHWC; the NHWC transformer proper only rewrites int8/fp16 kernels) with one intra-op
thread per CPU, and OpenVINO's CPU plugin (latency and throughput hints) when installed. Scores
must equal torch eager's within 1e-4 (norm-wise relative) to count; the fastest such candidate
per model is printed last. Throughput is also given as % of the measured FMA peak.

    python bench/bench_cpu_backends.py            # ~10 min on 2 cores
    python bench/bench_cpu_backends.py --quick    # fewer images, batch 4 only
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ceilings import available_cpus, measure_ceilings
from workloads import Workload, images_per_second, relative_error, stylegan_places, synthetic_scene

from rescore.export.graphs import GraphFiles
from rescore.export.ort import OrtSession
from rescore.export.session import TorchSession, latent_geometry
from rescore.models.errors import RescoreError
from rescore.models.fused import ScoringPass

PARITY = 1e-4


def candidates(
    workload: Workload, graphs: GraphFiles, threads: int, max_batch: int
) -> Iterator[tuple[str, Callable[[], object]]]:
    """(label, open) for every CPU backend configuration compared."""
    import torch

    generator, predictors = workload.generator, workload.predictors
    geometry = latent_geometry(generator)
    names = ScoringPass(generator, predictors).semantic_names
    cpu = torch.device("cpu")
    yield "torch eager", lambda: TorchSession(generator, predictors, cpu)

    def compiled():
        from rescore.export.compiled import CompiledSession

        return CompiledSession(generator, predictors, cpu, max_batch=max_batch)

    yield "torch.compile (inductor)", compiled
    for level in ("basic", "extended", "all"):
        yield (
            f"onnxruntime {level}, {threads} thr",
            lambda level=level: OrtSession(
                graphs, geometry, names, device=cpu, threads=threads, optimization=level
            ),
        )
    for hint in ("LATENCY", "THROUGHPUT"):

        def openvino(hint=hint):
            from rescore.export.openvino import OpenVinoSession

            return OpenVinoSession(graphs, geometry, names, threads=threads, hint=hint)

        yield f"openvino {hint.lower()}, {threads} thr", openvino


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, batch 4 only")
    parser.add_argument("--models", nargs="+", default=["stylegan", "synthetic"])
    parser.add_argument(
        "--only", nargs="+", default=None, help="run the backends whose label contains one of these"
    )
    parser.add_argument("--images", type=int, default=None, help="images per measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = available_cpus()
    import torch

    ceilings = measure_ceilings(threads)
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {threads} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(ceilings.report())
    header = (
        f"| {'model':30s} | {'backend':28s} | batch | img/s | vs eager | % FMA peak | "
        f"% per CPU-s | max rel err | open s |"
    )
    rows, winners = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            if model == "stylegan":
                workload = stylegan_places(
                    Path(tmp), images=args.images or (4 if args.quick else 8)
                )
                batches = [4] if args.quick else [1, 4]
            else:
                workload = synthetic_scene(images=args.images or (64 if args.quick else 256))
                batches = [64]
            graphs = GraphFiles.cached(
                workload.generator, workload.predictors, Path(tmp) / "cache" / model
            )
            graphs.graph("fused"), graphs.graph("mapping")  # export before timing anything
            eager_rate: dict[int, float] = {}
            expected = None
            for label, open_session in candidates(workload, graphs, threads, max(batches)):
                if expected is not None and args.only and not any(o in label for o in args.only):
                    continue
                try:
                    start = time.perf_counter()
                    session = open_session()
                    opened = time.perf_counter() - start
                except RescoreError as error:
                    print(f"{label}: not run ({error})")
                    continue
                for batch in batches:
                    cpu_start = time.process_time()
                    rate, scores = images_per_second(session, workload.wp, batch)
                    cpu = (
                        (time.process_time() - cpu_start)
                        * len(workload.wp)
                        / (len(workload.wp) + batch)
                    )  # the warm-up batch is in the CPU time too
                    core_peak = ceilings.fraction_of_core_peak(
                        workload.flops * len(workload.wp), cpu
                    )
                    if expected is None:
                        expected = scores
                    eager_rate.setdefault(batch, rate)
                    error = relative_error(scores, expected)
                    row = (
                        f"| {workload.label:30s} | {label:28s} | {batch:5d} | {rate:5.2f} | "
                        f"{rate / eager_rate[batch]:7.2f}x | "
                        f"{ceilings.fraction_of_fma(rate * workload.flops):10.1%} | "
                        f"{core_peak:9.1%} | {error:11.1e} | {opened:6.1f} |"
                    )
                    print(row, flush=True)
                    rows.append(row)
                    best = winners.get(workload.label)
                    if error <= PARITY and (best is None or rate > best[1]):
                        winners[workload.label] = (f"{label}, batch {batch}", rate)
    print(
        f"\n{header}\n|{'-' * 32}|{'-' * 30}|------:|------:|---------:|-----------:|"
        f"------------:|-------:|"
    )
    print("\n".join(rows))
    for model, (label, rate) in winners.items():
        print(f"fastest at equal scores (<= {PARITY:g}) for {model}: {label} ({rate:.2f} img/s)")


if __name__ == "__main__":
    main()
