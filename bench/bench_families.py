"""Images/s of every generator family at 256 px, on the default backend and on torch eager.

One row per family: StyleGAN (v1), StyleGAN2, StyleGAN3 configs T and R, PGGAN and BigGAN-deep,
each with seeded random weights at the published widths (genforce's 256 px files; NVlabs'
`train.py` defaults for StyleGAN3 T and R; the port's BigGAN-deep-256 config), written and read
back through rescore's loaders where the format has a writer. Two workloads per family:
"generate" (the fused pass with the weight-free colour predictor: practically the generator
alone) and "+ Places365" (the paper's predictor). Backends: `auto` (on a CPU: ONNX Runtime, the
exported fused pass) and `torch` (eager), side by side, after a warm-up batch each.

    python bench/bench_families.py --quick       # a few minutes on 2 cores: 2 images per cell
    python bench/bench_families.py               # 8 images per cell
    python bench/bench_families.py --device cuda --images 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from ceilings import available_cpus
from workloads import images_per_second, workload

from rescore.export.backends import BackendSpec, open_session
from rescore.models.biggan import BigGANConfig, save_random_biggan
from rescore.models.pggan import save_random_pggan
from rescore.models.places365 import load_places365, write_random_places365
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator, build_predictor
from rescore.models.stylegan import save_random_stylegan
from rescore.models.stylegan2 import save_random_stylegan2
from rescore.models.stylegan3 import StyleGAN3Config, random_stylegan3

RESOLUTION = 256
# pytorch-pretrained-BigGAN's BigGAN-deep-256 (convert_tf_to_pytorch.py, `BigGAN256`)
BIGGAN_DEEP_256 = BigGANConfig(
    output_dim=256,
    layers=(
        (False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
        (True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2),
        (True, 2, 1),
    ),
)  # fmt: skip
# NVlabs stylegan3 train.py defaults (--cbase 32768 --cmax 512; config R doubles both)
STYLEGAN3_256 = StyleGAN3Config(z_dim=512, c_dim=0, w_dim=512, img_resolution=RESOLUTION)


def _loaded(name: str, save: Callable[[Path], Path]) -> Callable[[Path], torch.nn.Module]:
    """A family built from a random checkpoint in its published format, read by the registry."""
    options = GeneratorOptions(class_index=0 if name == "biggan" else None)
    return lambda directory: build_generator(ModelRef(name, save(directory)), options)


FAMILIES: dict[str, Callable[[Path], torch.nn.Module]] = {
    "stylegan": _loaded(
        "stylegan", lambda d: save_random_stylegan(d / "sg.pth", resolution=RESOLUTION)
    ),
    "stylegan2": _loaded(
        "stylegan2", lambda d: save_random_stylegan2(d / "sg2.pth", resolution=RESOLUTION)
    ),
    "stylegan3-t": lambda d: random_stylegan3(STYLEGAN3_256),
    "stylegan3-r": lambda d: random_stylegan3(STYLEGAN3_256.preset("r")),
    "pggan": _loaded("pggan", lambda d: save_random_pggan(d / "pg.pth", resolution=RESOLUTION)),
    "biggan": _loaded("biggan", lambda d: save_random_biggan(d / "biggan", BIGGAN_DEEP_256)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images per cell (a few minutes)")
    parser.add_argument("--images", type=int, default=None, help="images per cell (default 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 quick, else 4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--family", action="append", choices=list(FAMILIES), default=None)
    parser.add_argument("--backend", action="append", default=None, help="default: auto, torch")
    parser.add_argument("--no-places", action="store_true", help="generate only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    images = args.images or (2 if args.quick else 8)
    batch = args.batch_size or (2 if args.quick else 4)
    backends = args.backend or ["auto", "torch"]
    torch.manual_seed(0)
    print(
        f"{datetime.date.today()}, {available_cpus()} CPUs, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}, torch {torch.__version__}; "
        f"{RESOLUTION} px, random weights at the published widths, {images} images per cell, "
        f"batch {batch}, device {args.device}"
    )
    header = "| family | GFLOP/image | workload | " + " | ".join(backends) + " |"
    print(header)
    print("|" + " --- |" * (3 + len(backends)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        color = build_predictor(ModelRef("color"))
        predictor_sets = {"generate": [color]}
        if not args.no_places:
            places = load_places365(write_random_places365(root / "places365"))
            predictor_sets["+ Places365"] = [places]
        for family in args.family or list(FAMILIES):
            (root / family).mkdir()
            generator = FAMILIES[family](root / family)
            for label, predictors in predictor_sets.items():
                load = workload(family, generator, predictors, images)
                rates = []
                for backend in backends:
                    spec = BackendSpec(
                        backend, args.device, cache_dir=root / "cache", max_batch=batch
                    )
                    begin = time.perf_counter()
                    session = open_session(generator, predictors, spec)
                    opened = time.perf_counter() - begin
                    rate, _ = images_per_second(session, load.wp, batch)
                    rates.append(f"{rate:.3g} ({session.info.backend}; open {opened:.0f} s)")
                print(
                    f"| {family} | {load.flops / 1e9:.1f} | {label} | " + " | ".join(rates) + " |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
