"""Images/s of sample-and-score and of layer-wise rescoring: rescore's fused pass vs a naive loop.

StyleGAN-256 + Places365 with random weights saved and loaded in the published formats. The naive
baseline is written in the style of the reference code (HiGAN): batches of 4, images to the host
as uint8, a PIL resize per image, then the predictor. Both run in this process, side by side,
after a warm-up, on the same codes; the script prints images/s and the ratio.

    python bench/bench_throughput.py                 # CPU defaults (a few minutes on 2 cores)
    python bench/bench_throughput.py --backend torch      # rescore on torch eager instead
    python bench/bench_throughput.py --device cuda --images 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rescore.engine.latents import Stream, latent_block
from rescore.engine.scoring import map_latents, score_codes
from rescore.export.backends import BackendSpec, open_session
from rescore.export.session import quantize_images
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate
from rescore.models.places365 import load_places365, write_random_places365
from rescore.models.stylegan import load_stylegan, save_random_stylegan

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def naive_scores(generator, predictor, wp: np.ndarray, device: torch.device) -> np.ndarray:
    """Reference-style loop: batches of 4, uint8 images on the host, PIL resize per image."""
    network = predictor.network
    outputs = []
    for start in range(0, len(wp), 4):
        with torch.no_grad():
            images = generator.synthesize(torch.from_numpy(wp[start : start + 4]).to(device))
        pixels = quantize_images(images).cpu().numpy()  # [4, H, W, 3] uint8 on the host
        batch = []
        for image in pixels:
            resized = Image.fromarray(image).resize((224, 224), Image.BILINEAR)
            batch.append(
                ((np.asarray(resized, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
            )
        with torch.no_grad():
            features = network.pooled_features(torch.from_numpy(np.stack(batch)).to(device))
            # HiGAN clamps the fc weight at >= 0 in place (a Places365 demo quirk)
            logits = features @ predictor.category_weight().T + network.fc.bias
        categories = torch.softmax(logits, dim=1).cpu().numpy()
        attributes = features.cpu().numpy() @ predictor.attribute_weight.cpu().numpy().T
        outputs.append(np.concatenate([categories, attributes], axis=1))
    return np.concatenate(outputs)


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return (time.perf_counter() - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=4, help="rescore's batch size")
    parser.add_argument("--backend", default="auto", help="rescore's backend (auto: fastest)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_random_stylegan(Path(tmp) / "g.pth", resolution=args.resolution)
        weights = write_random_places365(Path(tmp) / "places365")
        generator = load_stylegan(checkpoint).to(device)
        predictor = load_places365(weights).to(device)
    session = open_session(
        generator, [predictor], BackendSpec(args.backend, str(device), max_batch=args.batch_size)
    )
    geometry = session.geometry
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"StyleGAN-{args.resolution} + Places365 (random weights), {args.images} images each; "
        f"rescore: {session.info.backend} {session.info.precision}, batch {args.batch_size}; "
        f"naive: torch eager, batches of 4"
    )

    z = latent_block(0, Stream.SAMPLE, 0, args.images, geometry.z_dim)
    wp = geometry.truncate(map_latents(session, z, args.batch_size))

    # warm-up both paths
    score_codes(session, wp[:4], args.batch_size)
    naive_scores(generator, predictor, wp[:4], device)

    # 1. sample-and-score
    fused_time, fused = timed(lambda: score_codes(session, wp, args.batch_size))
    naive_time, naive = timed(lambda: naive_scores(generator, predictor, wp, device))
    agree = np.max(np.abs(fused - naive)) / (np.max(np.abs(naive)) + 1e-12)
    print(
        f"sample+score   rescore {args.images / fused_time:8.2f} img/s   naive "
        f"{args.images / naive_time:8.2f} img/s   ratio {naive_time / fused_time:5.2f}x   "
        f"(max rel diff {agree:.1e})"
    )

    # 2. layer-wise rescoring: one boundary, all layers + each layer, on images/16 latents
    latents = max(1, args.images // 16)
    direction = np.random.default_rng(0).normal(size=(1, geometry.num_layers, geometry.w_dim))
    direction = (direction / np.linalg.norm(direction, axis=-1, keepdims=True)).astype(np.float32)
    codes = manipulate(wp[:latents], direction, layer_sets_all_and_each(geometry.num_layers), 2.0)
    flat = codes.reshape(-1, geometry.num_layers, geometry.w_dim)
    count = len(flat) + latents
    fused_time, _ = timed(
        lambda: (
            score_codes(session, wp[:latents], args.batch_size),
            score_codes(session, flat, args.batch_size),
        )
    )
    naive_time, _ = timed(
        lambda: (
            naive_scores(generator, predictor, wp[:latents], device),
            naive_scores(generator, predictor, flat, device),
        )
    )
    print(
        f"layer rescore  rescore {count / fused_time:8.2f} img/s   naive "
        f"{count / naive_time:8.2f} img/s   ratio {naive_time / fused_time:5.2f}x   "
        f"({latents} latents x {len(codes[0])} layer sets + originals = {count} images)"
    )


if __name__ == "__main__":
    main()
