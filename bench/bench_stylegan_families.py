"""Images/s of the StyleGAN generators (v1, v2) at 256 px on torch eager, side by side.

Random weights in the published layouts (`stylegan_bedroom256`, `stylegan2_church256`), saved and
loaded through the real loaders. NVlabs StyleGAN2 pickles load into the same module as the
genforce files, so one StyleGAN2 row covers both. Warm-up first; prints images/s and the ratio
StyleGAN2 / StyleGAN.

    python bench/bench_stylegan_families.py                    # CPU, a few minutes on 2 cores
    python bench/bench_stylegan_families.py --device cuda --images 512 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rescore.models.base import truncate
from rescore.models.stylegan import load_stylegan, save_random_stylegan
from rescore.models.stylegan2 import load_stylegan2, save_random_stylegan2


def images_per_second(generator, images: int, batch_size: int, device: torch.device) -> float:
    """Synthesis throughput (mapping and truncation included), after one warm-up batch."""
    generator = generator.to(device)
    z = torch.randn(images, generator.z_dim, device=device)

    def run(codes: torch.Tensor) -> None:
        with torch.no_grad():
            for start in range(0, len(codes), batch_size):
                w = generator.map(codes[start : start + batch_size])
                wp = truncate(w, generator.average_w(), generator.truncation_coefficients())
                generator.synthesize(wp)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(z[:batch_size])
    begin = time.perf_counter()
    run(z)
    return images / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        v1 = load_stylegan(save_random_stylegan(Path(tmp) / "v1.pth", resolution=args.resolution))
        v2_path = save_random_stylegan2(Path(tmp) / "v2.pth", resolution=args.resolution)
        v2 = load_stylegan2(v2_path)
    rates = {
        name: images_per_second(model, args.images, args.batch_size, device)
        for name, model in (("stylegan", v1), ("stylegan2", v2))
    }
    for name, rate in rates.items():
        print(f"{name:10s} {args.resolution}px  {rate:8.2f} images/s  ({args.device})")
    print(f"stylegan2 / stylegan: {rates['stylegan2'] / rates['stylegan']:.2f}x")


if __name__ == "__main__":
    main()
