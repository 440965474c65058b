"""Keep the scoring pass busy: the stages of a chunked run joined by bounded queues.

    producer thread   prepare chunk c+1 (latents, mapping)  ─► queue (depth d) ─► driver
    driver            score chunk c                         ─► queue (depth d) ─► writer thread
    writer thread     write chunk c-1: arrays (zstd, crc32c), then its ledger entry, in order

Depth 0 runs every stage inline in the driver, in the same order: the reference path, and the
`--no-overlap` switch. The values do not depend on the depth (each chunk is computed by the same
calls on the same inputs), so a store is byte-identical with and without the threads.

Sessions: no session method is called from two threads at once (in `sample` the producer only
maps and the driver only scores; in `rescore` with fixed K the producer makes every session call
and the driver none), so a backend needs no more thread safety than one graph per method.

Errors: an exception in a thread is raised in the driver where the serial run would have raised it
(a producer's failure when its item is consumed; a writer's failure at the next submit or at the
close), and the stages stop: nothing waits forever on a full or empty queue. A chunk is marked
complete only after all its arrays are written (`ChunkedStore.write_chunk`), so whatever stops a
writer leaves unfinished chunks pending. On an ordinary exception in the driver the writer still
writes the chunks already handed to it (as the serial run would have); on Ctrl-C it finishes only
the chunk it is writing. The producer is always waited for (it may be using a session the caller
closes next); through a `StoppableSession` it stops within one session call.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

_POLL_S = 0.05  # how often a blocked stage looks whether the other side stopped
_DONE = object()


class _Failed:
    """An exception raised in a stage's thread, carried through the queue to the driver."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """Iterate `items` in a background thread, at most `depth` items ahead of the consumer.

    Use as a context manager; iterate the object itself. `depth` 0: plain iteration, no thread.
    `stop` is set when the consumer leaves; items computed through `StoppableSession(session,
    stop)` then end within one session call instead of finishing the item.
    """

    def __init__(
        self,
        items: Iterable[T],
        depth: int = 1,
        name: str = "prefetch",
        stop: threading.Event | None = None,
    ) -> None:
        self._items, self._depth = items, depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = stop or threading.Event()
        self._thread = threading.Thread(target=self._produce, name=f"rescore-{name}", daemon=True)

    def __enter__(self) -> Prefetch[T]:
        if self._depth:
            self._thread.start()
        return self

    def __iter__(self) -> Iterator[T]:
        if not self._depth:
            yield from self._items
            return
        while (item := self._get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self._stop.set()
        if not self._depth:
            return
        # The item in progress may use a session the caller closes next: wait for it (bounded:
        # one session call with a `StoppableSession`, else one item; then its put sees the stop).
        self._thread.join()

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not _put(self._queue, item, self._stop):
                    return
            _put(self._queue, _DONE, self._stop)
        except BaseException as error:  # handed to the driver, raised there
            _put(self._queue, _Failed(error), self._stop)

    def _get(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the prefetch thread ended without a result") from None


class InOrderWriter:
    """Call `write(*args)` for each `submit(*args)` in submission order, in a background thread
    with at most `depth` submissions waiting (`depth` 0: at once, in the caller).

    Use as a context manager: a clean exit waits until everything submitted is written and raises
    the writer's error, if any; `submit` raises it as soon as it is known.
    """

    def __init__(self, write: Callable[..., None], depth: int = 1, name: str = "writer") -> None:
        self._write, self._depth = write, depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()  # Ctrl-C: drop what is queued
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name=f"rescore-{name}", daemon=True)

    def __enter__(self) -> InOrderWriter:
        if self._depth:
            self._thread.start()
        return self

    def submit(self, *args: Any) -> None:
        """Write `args` after everything submitted before (or now, with depth 0)."""
        if not self._depth:
            self._write(*args)
            return
        self._raise_failure()
        while not _put(self._queue, args, self._stop, give_up=self._failed):
            self._raise_failure()

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if not self._depth:
            return
        if _interrupted(kind):
            self._stop.set()  # finish the chunk being written, drop the queued ones
        _put(self._queue, _DONE, self._stop, give_up=self._failed)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                args = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if args is _DONE:
                return
            try:
                self._write(*args)
            except BaseException as error:  # raised in the driver; later submissions are refused
                self._error = error
                return

    def _failed(self) -> bool:
        return self._error is not None or not self._thread.is_alive()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._thread.is_alive():
            raise RuntimeError("the writer thread ended before the run did")


class Stopped(Exception):
    """Raised in a producer's session call after the driver left (never reaches the driver)."""


class StoppableSession:
    """A scoring session whose calls (`map`, `score`, `score_layer_sets`, `render`) raise
    `Stopped` once `stop` is set, so that a chunk computed ahead ends within one call (one
    micro-batch) when the run stops; everything else is the wrapped session's."""

    _CALLS = ("map", "score", "score_layer_sets", "render")

    def __init__(self, session: Any, stop: threading.Event) -> None:
        self._session, self._stop = session, stop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._session, name)
        if name not in self._CALLS:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._stop.is_set():
                raise Stopped(f"{name} after the run stopped")
            return value(*args, **kwargs)

        return call


class BusyClock:
    """Seconds spent inside timed calls, against the wall time since `start()`: the scoring
    pass's idle fraction is 1 - busy / wall. Calls are timed one at a time (the pipelines here
    never score in two threads at once)."""

    def __init__(self) -> None:
        self.busy = 0.0
        self.calls = 0
        self._start = time.perf_counter()

    def start(self) -> None:
        self.busy, self.calls, self._start = 0.0, 0, time.perf_counter()

    def wall(self) -> float:
        return time.perf_counter() - self._start

    def idle_fraction(self) -> float:
        wall = self.wall()
        return max(0.0, 1.0 - self.busy / wall) if wall > 0 else 0.0

    def timed(self, call: Callable[..., T]) -> Callable[..., T]:
        """`call`, adding the seconds it runs to `busy`."""

        def run(*args: Any, **kwargs: Any) -> T:
            begin = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.busy += time.perf_counter() - begin
                self.calls += 1

        return run


class TimedSession:
    """A scoring session whose scoring calls (`score`, and `score_layer_sets` where the session
    has it) are timed by a `BusyClock`; everything else is the wrapped session's."""

    _TIMED = ("score", "score_layer_sets")

    def __init__(self, session: Any, clock: BusyClock) -> None:
        self._session, self.clock = session, clock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._session, name)  # AttributeError when the session lacks it
        return self.clock.timed(value) if name in self._TIMED else value

    def __enter__(self) -> TimedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def overlap_default(device: str) -> bool:
    """Whether the stages overlap when the user did not say (`--overlap/--no-overlap`), by the
    scoring session's device ('cpu', 'cuda:0', ...); see bench/bench_overlap.py and RESULTS.md."""
    return not device.startswith("cpu")


def resolve_overlap(requested: bool | None, device: str) -> int:
    """Queue depth of the stages: 1 when overlapping (asked for, or the device's default)."""
    return int(overlap_default(device) if requested is None else requested)


def _put(
    channel: queue.Queue,
    item: Any,
    stop: threading.Event,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Put `item` unless `stop` is set or `give_up()` says the other side is gone."""
    while not stop.is_set() and not give_up():
        try:
            channel.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _interrupted(kind: type[BaseException] | None) -> bool:
    return kind is not None and issubclass(kind, KeyboardInterrupt)
