"""How long the scoring pass waits: `rescore sample` and `rescore rescore` with the overlap stages
off (everything in one thread, one chunk after the other) and on (`rescore.engine.overlap`: the
next chunk's latents prepared and the previous chunk written in threads while this one is scored).

The engine's own functions run on the default backend (`auto`) through a `TimedSession`, which
adds up the seconds spent inside the scoring calls (`score`, `score_layer_sets`): the pass's idle
fraction is 1 - busy / wall, where wall is the whole call (store creation and the final write
included). Off and on alternate (off-on, then on-off: the machine's load drifts), best of the
repeats by wall time, each run into a new store; the stores of both modes are compared byte for
byte.

    python bench/bench_overlap.py            # synthetic 64 px and StyleGAN-256 + Places365
    python bench/bench_overlap.py --quick    # fewer latents (StyleGAN: 8 sampled, 2 rescored)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import zarr

from rescore.engine.boundary import Boundary
from rescore.engine.executor import ExecutorSpec
from rescore.engine.overlap import BusyClock, TimedSession, overlap_default
from rescore.engine.rescore import CiTarget, RescoreConfig, rescore_boundaries
from rescore.engine.sample import SampleConfig, sample_and_score
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.export.backends import BackendSpec
from rescore.models.places365 import write_random_places365
from rescore.models.registry import GeneratorOptions, ModelRef
from rescore.models.stylegan import save_random_stylegan


@dataclass(frozen=True)
class Case:
    """One model and the sizes it is measured at."""

    key: str  # --models name
    label: str
    spec: ModelSpec
    sample: SampleConfig
    rescore: RescoreConfig
    repeats: int


@dataclass(frozen=True)
class Timing:
    wall: float
    busy: float
    images: int

    @property
    def idle(self) -> float:
        return max(0.0, 1.0 - self.busy / self.wall)


def cases(tmp: Path, quick: bool) -> list[Case]:
    """The synthetic scene model (cheap pass: bookkeeping shows) and StyleGAN-256 + Places365."""
    synthetic = ModelSpec(
        ModelRef("synthetic"), (ModelRef("synthetic"),), GeneratorOptions(resolution=64)
    )
    generator = save_random_stylegan(tmp / "g.pth", resolution=256)
    stylegan = ModelSpec(
        ModelRef("stylegan", generator), (ModelRef("places365", write_random_places365(tmp / "p")),)
    )
    n = 4000 if quick else 16000
    return [
        Case(
            "synthetic",
            "synthetic 64 px",
            synthetic,
            SampleConfig(n, 0, n // 8, 50),
            RescoreConfig(n // 10, 0, 2.0, n // 40, 25),
            3,
        ),
        Case(
            "stylegan",
            "StyleGAN-256 + Places365",
            stylegan,
            SampleConfig(8 if quick else 32, 0, 4, 4),
            RescoreConfig(2, 0, 2.0, 1, 1) if quick else RescoreConfig(6, 0, 2.0, 2, 2),
            2,
        ),
    ]


def timed_run(session, clock: BusyClock, run, path: Path, on: bool) -> Timing:
    """Wall and busy seconds of `run(timed_session, path, on)`, which returns the images scored."""
    clock.start()
    images = run(TimedSession(session, clock), path, on)
    return Timing(clock.wall(), clock.busy, images)


def compare(case: Case, backend: BackendSpec, tmp: Path) -> list[str]:
    """Markdown rows (sample, rescore fixed K, rescore adaptive K) for one case."""
    rng = np.random.default_rng(0)
    rows, stores = [], {}
    with open_model_session(case.spec, backend) as session:
        default = overlap_default(session.info.device)
        print(f"{case.label}: {session.info}, default overlap {default}", file=sys.stderr)
        geometry = session.geometry
        normal = rng.standard_normal((1, geometry.num_layers, geometry.w_dim))
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        boundaries = [Boundary("b0", normal.astype(np.float32))]
        layer_sets = 1 + geometry.num_layers
        steps = {
            "sample": lambda s, path, on: (
                sample_and_score(s, case.spec, path, case.sample, overlap=on, progress=False),
                case.sample.num_samples,
            )[1],
            "rescore, fixed K": lambda s, path, on: _rescore(
                s, case, boundaries, path, on, None, layer_sets
            ),
            "rescore, adaptive K": lambda s, path, on: _rescore(
                s, case, boundaries, path, on, CiTarget(1e-6), layer_sets
            ),
        }
        clock = BusyClock()
        batch = case.sample.batch_size
        warm = SampleConfig(batch, 0, batch, batch)  # the batch shapes, before any timing
        sample_and_score(session, case.spec, tmp / f"{case.key}-w.zarr", warm, progress=False)
        warm_k = case.rescore.chunk_size
        _rescore(session, case, boundaries, tmp / f"{case.key}-r.zarr", False, None, 1, warm_k)
        for step, run in steps.items():
            best: dict[bool, Timing] = {}
            for repeat in range(case.repeats):
                for on in (False, True) if repeat % 2 == 0 else (True, False):  # load drifts
                    path = tmp / f"{case.key}-{len(rows)}-{on}-{repeat}.zarr"
                    timing = timed_run(session, clock, run, path, on)
                    stores[on] = path
                    if on not in best or timing.wall < best[on].wall:
                        best[on] = timing
            same = _identical(stores[False], stores[True])
            off, on = best[False], best[True]
            rows.append(
                f"| {case.label} | {step} | {off.images} | {off.wall:.2f} | {off.idle:.1%} | "
                f"{on.wall:.2f} | {on.idle:.1%} | {off.wall / on.wall:.2f}x | "
                f"{'yes' if same else 'NO'} |"
            )
            print(rows[-1], flush=True)
    return rows


def _rescore(session, case, boundaries, path, on, target, layer_sets, latents=None) -> int:
    """Rescore `boundaries` into `path`; the number of images scored."""
    config = replace(case.rescore, target=target, num_latents=latents or case.rescore.num_latents)
    run = rescore_boundaries(
        session,
        case.spec,
        boundaries,
        path,
        config,
        executor=ExecutorSpec(overlap=on),
        progress=False,
    )
    return sum(int(a.count) for a in run.accumulators) * layer_sets + config.num_latents


def _identical(a: Path, b: Path) -> bool:
    first, second = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    names = sorted(first.array_keys())
    return names == sorted(second.array_keys()) and all(
        first[n][:].tobytes() == second[n][:].tobytes() for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer latents and repeats")
    parser.add_argument("--models", nargs="+", default=["synthetic", "stylegan"])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; device {args.device}"
    )
    print(
        "| model | step | images | off: wall s | off: idle | on: wall s | on: idle | speed-up "
        "| same bytes |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backend = BackendSpec("auto", args.device, cache_dir=root / "cache")
        for case in cases(root, args.quick):
            if case.key in args.models:
                compare(case, backend, root)
    load = os.getloadavg()
    print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
