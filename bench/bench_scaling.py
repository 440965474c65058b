"""Scaling of `rescore sample` over Ray workers: images/s with the local executor, 1 and 2 Ray
actors, and the executor's overhead per chunk, measured side by side in one run.

The synthetic scene model (the embedded default) on the torch backend, so the figures measure the
executor rather than an exporter. Each measurement samples a fresh store; Ray is started once,
before the timings, and its start-up time is reported separately.

    python bench/bench_scaling.py                  # ~2 minutes on 2 cores
    python bench/bench_scaling.py --num 4000 --chunk-size 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rescore.engine.executor import ExecutorSpec
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import sample_step
from rescore.engine.sample import SampleConfig, open_samples
from rescore.engine.spec import ModelSpec
from rescore.export.backends import BackendSpec
from rescore.models.registry import GeneratorOptions, ModelRef


def measure(executor: ExecutorSpec, root: Path, config: SampleConfig, spec, backend) -> float:
    """Seconds to fill a new samples store with `executor`."""
    run = RunDirectory(root / f"{executor.kind}-{executor.workers}-{time.monotonic_ns()}")
    start = time.perf_counter()
    sample_step(run, spec, backend, config, executor=executor, progress=False)
    elapsed = time.perf_counter() - start
    assert open_samples(run.samples).is_complete()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()

    import ray

    options = GeneratorOptions(resolution=args.resolution)
    spec = ModelSpec(ModelRef("synthetic"), (ModelRef("synthetic"),), options)
    backend = BackendSpec("torch", "cpu", max_batch=50)
    config = SampleConfig(args.num, 0, args.chunk_size, 50)
    chunks = -(-args.num // args.chunk_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        measure(ExecutorSpec(), root, SampleConfig(100, 1, 50, 50), spec, backend)  # warm-up
        local = measure(ExecutorSpec(), root, config, spec, backend)
        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        rows = [("local (this process)", local)]
        for workers in (1, 2):
            seconds = measure(ExecutorSpec("ray", workers), root, config, spec, backend)
            rows.append((f"ray, {workers} worker(s)", seconds))
        ray.shutdown()

    print(f"synthetic {args.resolution}px, N = {args.num}, {chunks} chunks of {args.chunk_size}")
    print(f"ray start-up (once per job): {startup:.1f} s")
    print(f"{'executor':24s} {'img/s':>8s} {'vs local':>9s}")
    for name, seconds in rows:
        print(f"{name:24s} {args.num / seconds:8.1f} {local / seconds:8.2f}x")
    overhead = (rows[1][1] - local) / chunks  # one actor does the local work plus the executor's
    print(f"overhead per chunk (1 Ray worker vs local): {overhead * 1000:.0f} ms")
    print(f"summary: 2 Ray workers {rows[1][1] / rows[2][1]:.2f}x one Ray worker")


if __name__ == "__main__":
    main()
