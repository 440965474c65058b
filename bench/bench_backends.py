"""Images/s of the fused scoring pass on every backend available here, in one run.

StyleGAN-256 + Places365 with random weights in the published formats. Each backend available
(torch eager, ONNX Runtime, TensorRT and `compiled` at each precision) scores the same codes at
several batch sizes, after a warm-up; the baselines are torch eager in the same run and the naive
reference-style loop of `higan_style.naive_scores` (batches of 4, uint8 images on the host,
a PIL resize per image). FLOPs per image are counted on the fused pass
(`torch.utils.flop_counter`). On the CPU each backend's achieved FLOP/s is given as % of the
machine's FMA peak, measured in this run by a compiled FMA loop (`ceilings.py`), next to % of the
best conv and matmul torch and ONNX Runtime reach; on a GPU against the fp32 matmul rate measured
here (a library ceiling, labelled as such: not the GPU's peak).

    python bench/bench_backends.py                       # CPU defaults, a few minutes on 2 cores
    python bench/bench_backends.py --device cuda --batch-sizes 32 64 128 256 --images 512
    python bench/bench_backends.py --ort-variants         # also ONNX Runtime settings on CPU
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ceilings import measure_ceilings
from higan_style import naive_scores
from workloads import flops_per_image, images_per_second, relative_error

from rescore.engine.latents import Stream, latent_block
from rescore.engine.scoring import map_latents
from rescore.export.backends import BackendSpec, open_session
from rescore.export.graphs import GraphFiles
from rescore.export.ort import OrtSession, available_cpus
from rescore.export.session import TorchSession
from rescore.models.errors import RescoreError
from rescore.models.places365 import load_places365, write_random_places365
from rescore.models.stylegan import load_stylegan, save_random_stylegan


def matmul_rate(device: torch.device, sizes: tuple[int, ...] = (2048, 4096)) -> float:
    """Measured fp32 torch.mm FLOP/s on `device`: best of a few runs per size (TF32 off).

    A library's ceiling, not the device's peak: on the CPU `ceilings.fma_peak` measures that.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        torch.mm(a, b)  # warm-up
        for _ in range(3):
            _sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = max(best, 2.0 * size**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _backends(device: torch.device) -> list[tuple[str, str]]:
    if device.type == "cpu":
        return [("onnxruntime", "fp32")]
    return [
        ("onnxruntime", "fp32"),
        ("tensorrt", "fp32"),
        ("tensorrt", "fp16"),
        ("tensorrt", "bf16"),
        ("compiled", "fp32"),  # torch.compile + CUDA graphs: needs only torch and Triton
        ("compiled", "bf16"),
        ("compiled", "fp16"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-images", type=int, default=4)
    parser.add_argument(
        "--ort-variants",
        action="store_true",
        help="also time ONNX Runtime optimization levels and thread counts",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="export/engine cache (default: a temporary directory)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "cache"
        generator = load_stylegan(save_random_stylegan(Path(tmp) / "g.pth", resolution=256))
        predictor = load_places365(write_random_places365(Path(tmp) / "places365"))
        reference = TorchSession(generator, [predictor], device)
        geometry = reference.geometry
        z = latent_block(0, Stream.SAMPLE, 0, args.images, geometry.z_dim)
        wp = geometry.truncate(map_latents(reference, z, 8))  # [N, L, D]

        flops = flops_per_image(reference.scoring_pass, torch.from_numpy(wp).to(device))
        print(
            f"device {device}, torch {torch.__version__}, {available_cpus()} CPUs, "
            f"torch threads {torch.get_num_threads()}; StyleGAN-256 + Places365, random weights"
        )
        print(f"fused pass: {flops / 1e9:.1f} GFLOP/image (counted)")
        if device.type == "cpu":
            ceilings = measure_ceilings()
            print(ceilings.report())
            peak, peak_label = ceilings.fma.flops, "% FMA pk"
        else:
            peak = matmul_rate(device)
            peak_label = "% of mm"
            print(
                f"fp32 torch.mm rate {peak / 1e9:.1f} GFLOP/s (a library ceiling, best of "
                f"2048^3 and 4096^3; not the GPU's peak)"
            )

        count = min(args.naive_images, len(wp))
        naive_scores(generator, predictor, wp[:1], device)  # warm-up
        start = time.perf_counter()
        naive = naive_scores(generator, predictor, wp[:count], device)
        naive_rate = count / (time.perf_counter() - start)
        print(
            f"{'naive loop (batches of 4)':34s} {naive_rate:8.2f} img/s   "
            f"{naive_rate * flops / peak:6.1%} {peak_label}"
        )

        rows: list[tuple[str, int, float, float]] = []
        eager: dict[int, float] = {}
        expected: np.ndarray | None = None
        for batch in args.batch_sizes:
            rate, scores = images_per_second(reference, wp, batch)
            eager[batch] = rate
            expected = scores if expected is None else expected
            rows.append(("torch eager fp32", batch, rate, 0.0))
        for backend, precision in _backends(device):
            spec = BackendSpec(
                backend,
                args.device,
                precision,
                cache_dir=cache_dir,
                max_batch=max(args.batch_sizes),
            )
            try:
                start = time.perf_counter()
                session = open_session(generator, [predictor], spec)
                opened = time.perf_counter() - start
            except RescoreError as error:
                print(f"{backend} {precision}: not run ({error})")
                continue
            print(f"{backend} {precision}: opened in {opened:.1f} s (export/build, cached after)")
            for batch in args.batch_sizes:
                rate, scores = images_per_second(session, wp, batch)
                rows.append(
                    (f"{backend} {precision}", batch, rate, relative_error(scores, expected))
                )
        if args.ort_variants and device.type == "cpu":
            graphs = GraphFiles.cached(generator, [predictor], cache_dir)
            batch = max(args.batch_sizes)
            for optimization in ("basic", "extended", "all"):
                for threads in sorted({1, available_cpus()}):
                    session = OrtSession(
                        graphs,
                        geometry,
                        reference.semantic_names,
                        device=device,
                        threads=threads,
                        optimization=optimization,
                    )
                    rate, scores = images_per_second(session, wp, batch)
                    rows.append(
                        (
                            f"onnxruntime {optimization}, {threads} thr",
                            batch,
                            rate,
                            relative_error(scores, expected),
                        )
                    )

        print(
            f"{'backend':34s} {'batch':>5s} {'img/s':>8s} {'vs eager':>9s} {'vs naive':>9s} "
            f"{peak_label:>8s} {'max rel err':>12s}"
        )
        for name, batch, rate, error in rows:
            print(
                f"{name:34s} {batch:5d} {rate:8.2f} {rate / eager[batch]:8.2f}x "
                f"{rate / naive_rate:8.2f}x {rate * flops / peak:8.1%} {error:12.1e}"
            )
        agreement = relative_error(naive, expected[:count])
        print(f"naive loop vs torch eager scores: max rel err {agreement:.1e}")
        name, batch, rate, _ = max(rows, key=lambda row: row[2])
        print(
            f"fastest: {name} at batch {batch}, {rate:.1f} img/s: 1 M latents sampled and scored "
            f"in {1e6 / rate / 3600:.1f} h (projected)"
        )


if __name__ == "__main__":
    main()
