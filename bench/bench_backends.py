"""Images/s of the fused scoring pass on every backend available here, in one run.

StyleGAN-256 + Places365 with random weights in the published formats. Each backend available
(torch eager, ONNX Runtime, TensorRT and `compiled` at each precision) scores the same codes at
several batch sizes, after a warm-up; the baselines are torch eager in the same run and the naive
reference-style loop of `higan_style.naive_scores` (batches of 4, uint8 images on the host,
a PIL resize per image). FLOPs per image are counted on the fused pass
(`torch.utils.flop_counter`). On the CPU each backend's achieved FLOP/s is given as % of the
machine's FMA peak, measured in this run by a compiled FMA loop (`ceilings.py`), next to % of the
best conv and matmul torch and ONNX Runtime reach; on a GPU as % of the GPU's dense bf16 peak (the
datasheet's, `ceilings.gpu_bf16_peak`, or --bf16-peak-tflops), next to the fp32 and bf16 matmul
rates measured here (library ceilings, labelled as such). On a GPU, `--ranking-latents N` also
asks whether reduced precision changes where semantics live: one random W direction, every single
layer moved (lambda = 2) on N latents, Delta [layer, semantic] on torch eager fp32 and on each
reduced-precision backend, then the peak layer and the Spearman correlation of the layer order
per semantic (all semantics, and the 20 with the largest fp32 effect).

    python bench/bench_backends.py                       # CPU defaults, a few minutes on 2 cores
    python bench/bench_backends.py --device cuda --batch-sizes 32 64 128 256 --images 512 \
        --ranking-latents 256                            # issue 12 section 5, one command
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
from ceilings import gpu_bf16_peak, measure_ceilings
from higan_style import naive_scores
from workloads import flops_per_image, images_per_second, relative_error

from rescore.engine.latents import Stream, latent_block
from rescore.engine.scoring import map_latents, score_codes
from rescore.export.backends import BackendSpec, open_session
from rescore.export.graphs import GraphFiles
from rescore.export.ort import OrtSession, available_cpus
from rescore.export.session import ScoringSession, TorchSession, manipulate_and_score
from rescore.kernels.manipulate import layer_sets_all_and_each
from rescore.models.errors import RescoreError
from rescore.models.places365 import load_places365, write_random_places365
from rescore.models.stylegan import load_stylegan, save_random_stylegan


def matmul_rate(
    device: torch.device,
    sizes: tuple[int, ...] = (2048, 4096),
    dtype: torch.dtype = torch.float32,
) -> float:
    """Measured torch.mm FLOP/s on `device` in `dtype`: best of a few runs per size (TF32 off).

    A library's ceiling, not the device's peak: on the CPU `ceilings.fma_peak` measures that.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        torch.mm(a, b)  # warm-up
        for _ in range(3):
            _sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = max(best, 2.0 * size**3 / (time.perf_counter() - start))
    return best


def layer_effects(
    session: ScoringSession, wp: np.ndarray, direction: np.ndarray, batch: int
) -> np.ndarray:
    """Delta [L, S]: mean over the latents wp [n, L, D] of max(0, moved - original) when only
    layer l moves by 2 * direction [L, D] (HiGAN's re-scoring, one layer at a time)."""
    sets = layer_sets_all_and_each(wp.shape[1])[1:]  # [L, L]: layer l alone
    moved = manipulate_and_score(session, wp, direction[None], sets, 2.0, batch)[0]  # [L, n, S]
    original = score_codes(session, wp, batch)  # [n, S]
    return np.maximum(moved - original[None], 0.0).mean(axis=1)


def ranking_agreement(reference: np.ndarray, candidate: np.ndarray, top: int = 20) -> str:
    """How far two Delta [L, S] tables agree on where each semantic lives: the share of semantics
    with the same peak layer and the mean Spearman correlation of the layer order, over all
    semantics and over the `top` with the largest reference effect."""
    strongest = np.argsort(reference.max(axis=0))[::-1][:top]
    parts = []
    for label, columns in (("all", np.arange(reference.shape[1])), (f"top {top}", strongest)):
        same_peak = np.mean(reference[:, columns].argmax(0) == candidate[:, columns].argmax(0))
        rho = np.nanmean([_spearman(reference[:, s], candidate[:, s]) for s in columns])
        parts.append(f"{label}: same peak layer {same_peak:.0%}, Spearman {rho:.3f}")
    return "; ".join(parts)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors (NaN when either is constant; ties, which
    continuous effects do not have, get distinct ranks)."""
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


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
    parser.add_argument(
        "--bf16-peak-tflops",
        type=float,
        default=None,
        help="the GPU's dense bf16 peak, when it is not in ceilings.GPU_BF16_DENSE_TFLOPS",
    )
    parser.add_argument(
        "--ranking-latents",
        type=int,
        default=0,
        help="latents for the fp32-vs-reduced-precision layer ranking check (0: skip)",
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
            for dtype in (torch.float32, torch.bfloat16):
                print(
                    f"{str(dtype)[6:]} torch.mm rate {matmul_rate(device, dtype=dtype) / 1e12:.1f} "
                    f"TFLOP/s (a library ceiling, best of 2048^3 and 4096^3; not the GPU's peak)"
                )
            bf16 = gpu_bf16_peak(torch.cuda.get_device_name(device), args.bf16_peak_tflops)
            if bf16 is None:
                parser.error(
                    f"no datasheet bf16 peak known for {torch.cuda.get_device_name(device)}; "
                    f"give it with --bf16-peak-tflops"
                )
            peak, peak_label = bf16.flops, "% bf16 pk"
            print(f"bf16 peak (used for % of peak): {peak / 1e12:.1f} TFLOP/s ({bf16.how})")

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
        reduced: dict[str, ScoringSession] = {}  # reduced-precision sessions, for the ranking
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
            if precision != "fp32":
                reduced[f"{backend} {precision}"] = session
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
        if args.ranking_latents > 0 and reduced:
            count, batch = args.ranking_latents, max(args.batch_sizes)
            z = latent_block(0, Stream.RESCORE, 0, count, geometry.z_dim)
            fresh = geometry.truncate(map_latents(reference, z, batch))  # [n, L, D]
            direction = np.random.default_rng(0).standard_normal(fresh.shape[1:])
            direction = (direction / np.linalg.norm(direction, axis=-1, keepdims=True)).astype(
                np.float32
            )
            effects = layer_effects(reference, fresh, direction, batch)
            print(f"layer ranking, {count} latents x {fresh.shape[1]} layers, lambda 2:")
            for label, session in reduced.items():
                candidate = layer_effects(session, fresh, direction, batch)
                print(f"  {label} vs torch eager fp32: {ranking_agreement(effects, candidate)}")


if __name__ == "__main__":
    main()
