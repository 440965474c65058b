"""Generator-prefix reuse in layer-wise re-scoring: FLOPs saved and speed-up, on torch eager.

For one boundary moved on every layer set (all layers, then each layer), the reference path builds
every code and scores it (`manipulate_and_score`); the fast path computes each stage input of the
original codes once and branches every layer set from the first stage it moves
(`TorchSession.score_layer_sets`). FLOPs are counted per stage (torch's counter); the saved share
is given for synthesis alone and for the whole pass (the predictors always run in full).

    python bench/bench_prefix.py              # StyleGAN-256 + Places365 and the synthetic model
    python bench/bench_prefix.py --latents 1  # fewer latents (StyleGAN-256: 15 images per latent)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from workloads import Workload, relative_error, stylegan_places, synthetic_scene

from rescore.export.prefix import entry_stages, stage_flops, synthesis_stages
from rescore.export.session import TorchSession, manipulate_and_score
from rescore.kernels.manipulate import layer_sets_all_and_each


def report(workload: Workload, latents: int, batch: int, repeats: int = 2) -> None:
    """Print FLOPs saved and both paths' time for `latents` latents of `workload`."""
    session = TorchSession(workload.generator, workload.predictors, "cpu")
    wp = workload.wp[:latents]
    num_layers, dim = wp.shape[1:]
    direction = np.random.default_rng(0).standard_normal((1, num_layers, dim))
    direction = (direction / np.linalg.norm(direction, axis=-1, keepdims=True)).astype(np.float32)
    sets = layer_sets_all_and_each(num_layers)
    stages = synthesis_stages(workload.generator)
    if stages is None:
        print(f"{workload.label}: synthesis has no stages (no prefix to reuse); reference only")
        saved_synthesis = saved_pass = 0.0
    else:
        flops = np.array(stage_flops(stages, torch.from_numpy(wp[:1])))  # [stages]
        synthesis = flops.sum()
        suffix = np.cumsum(flops[::-1])[::-1]  # FLOPs from each stage to the image
        # the originals' stage inputs are computed once more (the engine scores originals apart)
        spent = suffix[entry_stages(stages, sets)].sum() + synthesis - flops[-1]
        full = len(sets) * synthesis
        predictors = workload.flops - synthesis
        saved_synthesis = 1 - spent / full
        saved_pass = (full - spent) / (full + len(sets) * predictors)
    session.score_layer_sets(wp[:1], direction, sets, 2.0, batch)  # warm up its batch shapes
    reference_s = fast_s = float("inf")
    for _ in range(repeats):  # interleaved, best of each: the machine's load drifts
        start = time.perf_counter()
        reference = manipulate_and_score(session, wp, direction, sets, 2.0, batch)
        reference_s = min(reference_s, time.perf_counter() - start)
        start = time.perf_counter()
        fast = session.score_layer_sets(wp, direction, sets, 2.0, batch)
        fast_s = min(fast_s, time.perf_counter() - start)
    print(
        f"| {workload.label} | {len(sets)} | {saved_synthesis:.1%} | {saved_pass:.1%} | "
        f"{reference_s / latents:.2f} | {fast_s / latents:.2f} | {reference_s / fast_s:.2f}x | "
        f"{relative_error(fast, reference):.1e} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=["synthetic", "stylegan"])
    parser.add_argument("--resolution", type=int, default=256, help="StyleGAN resolution")
    args = parser.parse_args()
    print(
        "| model | layer sets | synthesis FLOPs saved | pass FLOPs saved | reference s/latent "
        "| reuse s/latent | speed-up | max rel diff |\n| --- | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            if model == "stylegan":
                workload = stylegan_places(Path(tmp), args.resolution, images=args.latents)
            else:
                workload = synthetic_scene(images=max(args.latents, 64))
            if model == "stylegan":
                report(workload, args.latents, args.batch_size)
            else:
                report(workload, 64, 64)


if __name__ == "__main__":
    main()
