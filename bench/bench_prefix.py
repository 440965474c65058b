"""Generator-prefix reuse in the engine's layer-wise re-scoring: FLOPs saved and speed-up, reuse on
vs off, side by side in one run, on torch eager and ONNX Runtime.

Both paths are the engine's own: `rescore.engine.scoring.score_layer_sets_on_grid` (what
`ChunkPlan.score` calls for a W-space boundary) with ``prefix_reuse`` on and off, for one boundary
moved on every layer set (all layers, then each layer), on the micro-batch grid. Reuse computes the
prefix of each micro-batch's originals once and branches every set from the first stage it moves
(torch: `export/prefix.py`; ONNX Runtime: the staged graphs of `export/staged.py`, exported into
the graph cache and opened before the warm-up, whose time and disk size are reported apart). FLOPs
are counted per stage by torch's counter; "net" charges reuse for its extra prefix run (the engine
scores the originals apart). Timings are interleaved, best of `--repeats`, after a warm-up of
both paths.

    python bench/bench_prefix.py                    # synthetic 64px and StyleGAN-256 + Places365
    python bench/bench_prefix.py --models synthetic --backends torch
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from workloads import Workload, relative_error, stylegan_places, synthetic_scene

from rescore.engine.scoring import score_layer_sets_on_grid
from rescore.export.backends import BackendSpec, open_session
from rescore.export.onnx import STAGED_GRAPH
from rescore.export.ort import OrtSession
from rescore.export.prefix import entry_stages, stage_flops, synthesis_stages
from rescore.export.session import offered_prefix_reuse
from rescore.kernels.manipulate import layer_sets_all_and_each


def flops_saved(workload: Workload, sets: np.ndarray) -> tuple[float, float]:
    """(synthesis, whole pass) FLOPs share that reuse saves per micro-batch, net of its prefix."""
    stages = synthesis_stages(workload.generator)
    flops = np.array(stage_flops(stages, torch.from_numpy(workload.wp[:1])))  # [stages]
    synthesis = flops.sum()
    suffix = np.cumsum(flops[::-1])[::-1]  # FLOPs from each stage to the image
    spent = suffix[entry_stages(stages, sets)].sum() + synthesis - flops[-1]
    full = len(sets) * synthesis
    predictors = workload.flops - synthesis
    return 1 - spent / full, (full - spent) / (full + len(sets) * predictors)


def open_backend(workload: Workload, backend: str, cache: Path):
    """A CPU session; "onnxruntime-nospin": ONNX Runtime whose fused graph's idle threads do not
    spin either (like the staged graphs: a like-for-like baseline on a loaded machine)."""
    spec = BackendSpec(backend.removesuffix("-nospin"), "cpu", cache_dir=cache)
    session = open_session(workload.generator, workload.predictors, spec)
    if backend == "onnxruntime-nospin":
        session = OrtSession(
            session.graphs, session.geometry, session.semantic_names, device=session.device,
            spin=False,
        )  # fmt: skip
    return session


def staged_megabytes(session) -> float:
    """MB on disk of an ONNX Runtime session's staged graphs (stage_<e>, scorer); 0 for torch."""
    graphs = getattr(session, "graphs", None)
    if graphs is None:
        return 0.0
    files = [p for p in graphs.directory.glob("*.onnx") if STAGED_GRAPH.fullmatch(p.stem)]
    return sum(p.stat().st_size for p in files) / 1e6


def report(workload: Workload, backend: str, latents: int, batch: int, repeats: int, cache: Path):
    """Print one table row: `workload` on `backend`, reuse off vs on."""
    session = open_backend(workload, backend, cache)
    wp = workload.wp[:latents]
    num_layers, dim = wp.shape[1:]
    direction = np.random.default_rng(0).standard_normal((num_layers, dim))
    direction = (direction / np.linalg.norm(direction, axis=-1, keepdims=True)).astype(np.float32)
    sets = layer_sets_all_and_each(num_layers)

    def run(reuse: bool) -> np.ndarray:
        return score_layer_sets_on_grid(
            session, wp, direction, sets, 2.0, batch, prefix_reuse=reuse
        )

    start = time.perf_counter()
    offered_prefix_reuse(session)  # ONNX Runtime: exports (first use) and opens the staged graphs
    staged_s = time.perf_counter() - start
    score_layer_sets_on_grid(session, wp[:batch], direction, sets, 2.0, batch, prefix_reuse=True)
    score_layer_sets_on_grid(session, wp[:batch], direction, sets, 2.0, batch, prefix_reuse=False)
    off_s = on_s = float("inf")
    for _ in range(repeats):  # interleaved, best of each: the machine's load drifts
        start = time.perf_counter()
        off = run(False)
        off_s = min(off_s, time.perf_counter() - start)
        start = time.perf_counter()
        on = run(True)
        on_s = min(on_s, time.perf_counter() - start)
    saved_synthesis, saved_pass = flops_saved(workload, sets)
    print(
        f"| {workload.label} | {backend} | {len(sets)} | {latents} x B {batch} | "
        f"{saved_synthesis:.1%} | {saved_pass:.1%} | {off_s / latents:.3f} | "
        f"{on_s / latents:.3f} | {off_s / on_s:.2f}x | {relative_error(on, off):.1e} | "
        f"{'yes' if np.array_equal(on, off) else 'no'} | {staged_s:.0f} | "
        f"{staged_megabytes(session):.0f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["synthetic", "stylegan"])
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime", "onnxruntime-nospin"]
    )
    parser.add_argument("--latents", type=int, default=4, help="StyleGAN latents per path")
    parser.add_argument("--batch-size", type=int, default=4, help="StyleGAN micro-batch B")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256, help="StyleGAN resolution")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(
        "| model | backend | layer sets | latents x micro-batch | synthesis FLOPs saved (net) "
        "| pass FLOPs saved (net) | reuse off s/latent | reuse on s/latent | speed-up "
        "| max rel diff | bit-identical | staged export + open s | staged graphs MB |\n"
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            if model == "stylegan":
                workload = stylegan_places(Path(tmp), args.resolution, images=args.latents)
                latents, batch = args.latents, args.batch_size
            else:
                workload = synthetic_scene(images=64)
                latents, batch = 64, 16
            for backend in args.backends:
                report(workload, backend, latents, batch, args.repeats, Path(tmp) / "cache")


if __name__ == "__main__":
    main()
