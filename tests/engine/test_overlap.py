"""The overlap stages (`rescore.engine.overlap`): order, error propagation, shutdown; sample stores
byte-identical with and without them; a writer's failure leaves unfinished chunks pending."""

import errno
import itertools
import threading

import numpy as np
import pytest
import torch
import zarr
from faults import fill_disk_after

from rescore.engine.errors import StoreError
from rescore.engine.overlap import (
    BusyClock,
    InOrderWriter,
    Prefetch,
    StoppableSession,
    Stopped,
    TimedSession,
    resolve_overlap,
)
from rescore.engine.sample import SampleConfig, sample_and_score
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.export.backends import BackendSpec
from rescore.export.session import HostStaging
from rescore.models.registry import ModelRef

SPEC = ModelSpec(
    ModelRef("toy_models:build_toy_generator"), (ModelRef("toy_models:build_toy_predictor"),)
)
CPU = BackendSpec("torch", "cpu")
CONFIG = SampleConfig(60, 3, 16, batch_size=8, save_wp=True)


def _live_stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rescore-")]


# ---- the stages ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_order_and_raises_where_the_serial_loop_would(depth):
    def items():
        yield from range(5)
        raise ValueError("item 5 is bad")

    seen = []
    with pytest.raises(ValueError, match="item 5"), Prefetch(items(), depth) as ahead:
        for item in ahead:
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert not _live_stage_threads()


def test_prefetch_stops_its_thread_when_the_consumer_leaves_early():
    with Prefetch(itertools.count(), 2) as ahead:
        for item in ahead:
            if item == 3:
                break
    assert not _live_stage_threads()


def test_a_chunk_computed_ahead_ends_within_one_session_call_when_the_driver_leaves():
    calls, entered, gate, stop = [], threading.Event(), threading.Event(), threading.Event()

    class Session:
        def score(self, batch):
            calls.append(batch)
            if len(calls) == 12:  # in the second chunk, while the driver leaves
                entered.set()
                gate.wait()

    session = StoppableSession(Session(), stop)
    chunks = ([session.score(i) for i in range(10)] for _ in range(5))  # 10 calls per chunk
    threading.Timer(0.2, gate.set).start()
    with Prefetch(chunks, 1, stop=stop) as ahead:
        for _ in ahead:
            assert entered.wait(10)
            break
    assert len(calls) == 12  # the call in progress ended; the rest of the chunk never ran
    assert not _live_stage_threads()
    with pytest.raises(Stopped):
        session.score(0)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_writer_writes_in_order_and_refuses_work_after_a_failure(depth):
    written = []

    def write(index):
        if index == 2:
            raise OSError(errno.ENOSPC, "full")
        written.append(index)

    with pytest.raises(OSError, match="full"), InOrderWriter(write, depth) as writer:
        for index in range(50):
            writer.submit(index)
    assert written == [0, 1]  # nothing after the failed write, in any mode
    assert not _live_stage_threads()


def test_writer_flushes_on_an_error_and_drops_the_queue_on_ctrl_c():
    for interrupt, expected in ((ValueError, [0, 1, 2]), (KeyboardInterrupt, [0])):
        written, release = [], threading.Event()

        def write(index, release=release, written=written):
            release.wait()  # the first write is still running when the driver stops
            written.append(index)

        threading.Timer(0.2, release.set).start()
        with pytest.raises(interrupt), InOrderWriter(write, 2) as writer:
            for index in range(3):
                writer.submit(index)
            raise interrupt()
        assert written == expected, interrupt
        assert not _live_stage_threads()


def test_timed_session_times_scoring_calls_and_hides_what_the_session_lacks():
    class Session:
        info = "info"

        def score(self, wp):
            return wp * 2

    clock = BusyClock()
    timed = TimedSession(Session(), clock)
    assert timed.info == "info" and timed.score(3) == 6 and clock.calls == 1
    assert getattr(timed, "score_layer_sets", None) is None  # the reference path is taken
    assert 0.0 <= clock.idle_fraction() <= 1.0
    assert resolve_overlap(None, "cpu") == 0 and resolve_overlap(None, "cuda:0") == 1
    assert resolve_overlap(True, "cpu") == 1 and resolve_overlap(False, "cuda:0") == 0


def test_host_staging_is_a_no_op_on_the_cpu():
    staging = HostStaging(torch.device("cpu"))
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = staging.to_device(array, "wp")
    assert tensor.device.type == "cpu" and np.shares_memory(tensor.numpy(), array)
    assert staging.buffers() == {}  # no pinned buffer on the CPU


# ---- stores ----------------------------------------------------------------------------------


def _sample(path, overlap):
    with open_model_session(SPEC, CPU) as session:
        return sample_and_score(session, SPEC, path, CONFIG, overlap=overlap, progress=False)


def test_sample_stores_are_byte_identical_with_and_without_overlap(tmp_path):
    serial = zarr.open_group(_sample(tmp_path / "off.zarr", False).path, mode="r")
    overlapped = zarr.open_group(_sample(tmp_path / "on.zarr", True).path, mode="r")
    names = sorted(serial.array_keys())
    assert names == sorted(overlapped.array_keys()) and "wp" in names and "ledger" in names
    for name in names:
        assert serial[name][:].tobytes() == overlapped[name][:].tobytes(), name
    assert serial.attrs.asdict() == overlapped.attrs.asdict()


def test_a_failing_writer_thread_stops_the_run_with_unfinished_chunks_pending(
    tmp_path, monkeypatch
):
    fill_disk_after(monkeypatch, "w", 2)  # two chunks of w fit, then the disk is full
    with pytest.raises(StoreError, match="free disk space"):
        _sample(tmp_path / "full.zarr", True)
    monkeypatch.undo()
    assert not _live_stage_threads()
    ledger = zarr.open_group(tmp_path / "full.zarr", mode="r")["ledger"][:]
    assert ledger.tolist() == [1, 1, 0, 0]  # chunk 2 lost its w: not marked, nor any later one
    resumed = zarr.open_group(_sample(tmp_path / "full.zarr", True).path, mode="r")
    reference = zarr.open_group(_sample(tmp_path / "ref.zarr", False).path, mode="r")
    for name in reference.array_keys():
        assert np.array_equal(resumed[name][:], reference[name][:]), name


def test_cli_overlap_flags_a_full_disk_is_one_line_and_either_mode_resumes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rescore.engine.cli import app

    runner = CliRunner()
    toy = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]
    args = [*toy, "--backend", "torch", "-n", "40", "--chunk-size", "10", "-q"]
    fill_disk_after(monkeypatch, "scores", 2)  # chunks 0 and 1 of scores fit
    failed = runner.invoke(app, ["sample", "-o", str(tmp_path / "r"), *args, "--overlap"])
    assert failed.exit_code == 2 and failed.stderr.startswith("rescore: error: cannot write")
    assert len(failed.stderr.strip().splitlines()) == 1
    monkeypatch.undo()
    for out, flag in (("r", "--no-overlap"), ("ref", "--overlap")):
        result = runner.invoke(app, ["sample", "-o", str(tmp_path / out), *args, flag])
        assert result.exit_code == 0, result.output
    resumed = zarr.open_group(tmp_path / "r" / "samples.zarr", mode="r")
    reference = zarr.open_group(tmp_path / "ref" / "samples.zarr", mode="r")
    for name in reference.array_keys():
        assert np.array_equal(resumed[name][:], reference[name][:]), name
