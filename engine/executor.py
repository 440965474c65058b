"""Who processes a store's pending chunks: this process (`local`), or a pool of Ray actors (`ray`).

The store was designed for this: a work unit is a chunk of latent indices, latents are a pure
function of (seed, index), each chunk is written whole and only then marked in the ledger. So the
driver creates (or resumes) the store exactly as a single process would, and the pending chunks are
handed to workers in any order; every array comes out byte-identical to a single-process run.

    driver:  store = create_or_resume(...)            identity checks, pre-sized arrays, ledger
             Ray Data: chunk ids -> map_batches(ChunkActor, ActorPoolStrategy(size=workers))
    actor:   __init__: build the models and the scoring session once (compiled graphs, engines)
             __call__: for each chunk id: compute, write the chunk, mark it in the ledger

A worker killed mid-chunk is restarted by Ray and its chunk redone (the chunk was not marked, and a
rewrite writes the same bytes); a killed driver resumes from the ledger like any other run. Ray is
an optional extra (`pip install "rescore[ray]"`), imported only here and only when asked for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from .errors import ExecutorError
from .overlap import Prefetch

log = logging.getLogger(__name__)

ExecutorKind = Literal["local", "ray"]


@dataclass(frozen=True)
class ExecutorSpec:
    """How pending chunks are processed: here, or by `workers` Ray actors at `address`."""

    kind: ExecutorKind = "local"
    workers: int = 1
    address: str | None = None  # None: start a local Ray; "auto" or ray://host:port: join one
    gpus_per_worker: float = 0.0  # 1 on GPU clusters: one actor per GPU
    overlap: bool | None = None  # local: overlap preparing, scoring, writing (None: by device)

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ExecutorError(f"unknown executor '{self.kind}'; use local or ray")
        if self.workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {self.workers}")

    def record(self) -> dict[str, Any]:
        """What a store's `session` attribute says about the executor that filled it."""
        if self.kind == "local":
            return {"executor": "local"}
        import ray

        return {
            "executor": "ray",
            "workers": self.workers,
            "ray_address": self.address or "local",
            "ray_version": ray.__version__,
            "gpus_per_worker": self.gpus_per_worker,
        }


LOCAL = ExecutorSpec()


class ChunkWork(Protocol):
    """Processes chunks of one store; built once per worker (models, sessions), then called."""

    def __call__(self, chunks: Sequence[int]) -> int:
        """Compute, write and mark the given chunks; return the number of rows written."""
        ...


def run_chunks(
    executor: ExecutorSpec,
    make_work: Callable[[], ChunkWork],
    pending: Sequence[int],
    *,
    rows: Callable[[int], int],
    desc: str,
    progress: bool = True,
) -> None:
    """Process `pending` chunks with `make_work()` workers; one progress bar for the whole job.

    `make_work` must be picklable for the Ray executor (it is called inside each actor).
    """
    total = int(sum(rows(c) for c in pending))
    with tqdm(total=total, unit="img", desc=desc, disable=not progress) as bar:
        if executor.kind == "local" or not pending:
            work = make_work()
            for chunk in pending:
                bar.update(work([chunk]))
            return
        for written in _ray_chunks(executor, make_work, pending):
            bar.update(written)


def local_in_order(
    work: Callable[[int, np.ndarray], Any],
    pending: Sequence[int],
    state: Callable[[], np.ndarray],
    *,
    ahead: int = 0,
    stop: threading.Event | None = None,
) -> Iterator[tuple[int, np.ndarray, Any]]:
    """(chunk, mask, work(chunk, mask)) for each pending chunk in order, with the mask `state()`
    holds when the chunk's turn comes; stops once the mask is all False.

    `ahead` >= 1: `work` runs in a background thread (`overlap.Prefetch`), up to `ahead` chunks
    before their turn, each with the mask `state()` holds at its dispatch. Only for masks that
    cannot change between chunks (fixed K); if one does, the caller discards what a chunk
    computed for entries cleared after its dispatch, as with Ray, and the result is the same.
    `stop` is set when the consumer leaves (see `overlap.Prefetch`)."""

    def computed() -> Iterator[tuple[int, np.ndarray, Any]]:
        for chunk in pending:
            mask = np.array(state(), dtype=bool)
            if not mask.any():
                return
            yield chunk, mask, work(chunk, mask)

    with Prefetch(computed(), ahead, "chunks", stop) as results:
        for chunk, mask, result in results:
            if not np.any(state()):
                return
            yield chunk, mask, result


def ray_in_order(
    executor: ExecutorSpec,
    make_work: Callable[[], Callable[[int, np.ndarray], Any]],
    pending: Sequence[int],
    state: Callable[[], np.ndarray],
) -> Iterator[tuple[int, np.ndarray, Any]]:
    """Like `local_in_order`, with the chunks computed by `executor.workers` Ray actors, at most
    two per actor in flight. Each chunk is dispatched with the mask `state()` holds then; the
    caller consumes results in chunk order and may clear mask entries meanwhile (adaptive K), so
    it discards what a chunk computed for entries cleared after its dispatch: the result is the
    same as in one process.

    Plain Ray actors rather than Ray Data here: the mask of later chunks depends on the results
    of earlier ones, consumed in order, which a streaming dataset pipeline cannot express without
    rebuilding its actor pool (and the models) for every wave."""
    ray = require_ray()
    _init_ray(ray, executor)
    cpus = _cpus_per_worker(ray, executor)
    actor_class = ray.remote(
        num_cpus=cpus,
        num_gpus=executor.gpus_per_worker or 0,
        max_restarts=-1,  # a killed worker is restarted and its chunk computed again
        max_task_retries=-1,
    )(_MaskedChunkActor)
    actors = [actor_class.remote(make_work, int(cpus)) for _ in range(executor.workers)]
    queue, in_flight, turn = deque(pending), deque(), 0
    try:
        while True:
            mask = np.array(state(), dtype=bool)
            if not mask.any():
                return
            while queue and len(in_flight) < 2 * len(actors):
                chunk = queue.popleft()
                actor = actors[turn % len(actors)]
                turn += 1
                in_flight.append((chunk, mask, actor.compute.remote(chunk, mask)))
            if not in_flight:
                return
            chunk, dispatched_mask, future = in_flight.popleft()
            yield chunk, dispatched_mask, _get(ray, future)
    finally:
        for actor in actors:
            ray.kill(actor)


class _MaskedChunkActor:
    """A Ray actor: builds its worker once, then computes (chunk, mask) requests."""

    def __init__(self, make_work: Callable[[], Callable[[int, np.ndarray], Any]], threads: int):
        import torch

        torch.set_num_threads(threads)  # the actor's CPUs, not the node's
        self.work = make_work()

    def compute(self, chunk: int, mask: np.ndarray) -> Any:
        return self.work(chunk, mask)


def _get(ray: Any, future: Any) -> Any:
    try:
        return ray.get(future)
    except ray.exceptions.RayError as error:
        raise _job_failed(error) from None


def _job_failed(error: Exception) -> ExecutorError:
    return ExecutorError(
        f"the Ray job failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
        f"completed chunks are kept: rerun the same command to resume"
    )


def _init_ray(ray: Any, executor: ExecutorSpec) -> None:
    """Join the cluster at `executor.address`, or start a local Ray with this machine's CPUs."""
    if ray.is_initialized():
        return
    if executor.address:
        ray.init(address=executor.address, log_to_driver=False)
    else:
        cpus = max(executor.workers, os.cpu_count() or 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def _cpus_per_worker(ray: Any, executor: ExecutorSpec) -> float:
    """One CPU per GPU actor; otherwise an equal share of the cluster's CPUs."""
    if executor.gpus_per_worker:
        return 1.0
    return max(1.0, ray.cluster_resources().get("CPU", 1.0) // executor.workers)


def require_ray() -> Any:
    """Import Ray, or explain how to install the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ExecutorError(
            f"--executor ray needs Ray ({error.name} is not installed); "
            f'install the extra: pip install "rescore[ray]"'
        ) from None
    return ray


class _ChunkActor:
    """A Ray Data actor: builds its worker once, then processes the chunk ids it is given."""

    def __init__(self, make_work: Callable[[], ChunkWork], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # the actor's CPUs, not the node's
        self.work = make_work()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks = [int(c) for c in batch["chunk"]]
        written = self.work(chunks)
        rows = np.zeros(len(chunks), dtype=np.int64)
        rows[0] = written
        return {"chunk": np.asarray(chunks), "rows": rows}


def _ray_chunks(executor: ExecutorSpec, make_work, pending: Sequence[int]):
    """Yield the rows written per finished chunk, as Ray actors finish them."""
    ray = require_ray()
    _init_ray(ray, executor)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the one bar
    context.execution_options.preserve_order = False
    cpus_per_worker = _cpus_per_worker(ray, executor)
    where = executor.address or "a local Ray"
    log.info("ray: %d actors, %s CPU each, on %s", executor.workers, cpus_per_worker, where)
    dataset = ray.data.from_items([{"chunk": int(c)} for c in pending])
    results = dataset.map_batches(
        _ChunkActor,
        fn_constructor_args=(make_work, int(cpus_per_worker)),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=executor.workers),
        num_cpus=cpus_per_worker,
        num_gpus=executor.gpus_per_worker or None,
    )
    try:
        for row in results.iter_rows():
            yield int(row["rows"])
    except ray.exceptions.RayError as error:
        raise _job_failed(error) from None
