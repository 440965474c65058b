from pathlib import Path

import numpy as np
import pytest

from rescore.engine.errors import StoreError, StoreMismatchError
from rescore.engine.store import FORMAT_VERSION, ArraySpec, ChunkedStore


def _create(path, identity=None, n=10, chunk=4):
    return ChunkedStore.create_or_resume(
        path,
        kind="test.kind",
        identity=identity or {"seed": 1},
        num_samples=n,
        chunk_size=chunk,
        arrays=[ArraySpec("x", (n, 3), ("sample", "dim"))],
        static={"w_avg": (np.arange(3, dtype=np.float32), ("dim",))},
    )


def test_chunks_ledger_and_resume(tmp_path):
    store = _create(tmp_path / "s.zarr")
    assert store.num_chunks == 3 and store.pending_chunks() == [0, 1, 2]
    assert store.chunk_range(2) == (8, 10)
    store.write_chunk(1, {"x": np.ones((4, 3), np.float32)})
    reopened = _create(tmp_path / "s.zarr")
    assert reopened.pending_chunks() == [0, 2]
    assert np.all(reopened.array("x")[4:8] == 1) and np.all(np.isnan(reopened.array("x")[:4]))
    assert np.array_equal(reopened.array("w_avg")[:], np.arange(3))
    with pytest.raises(StoreError, match="incomplete"):
        reopened.require_complete("reading")


def test_other_configuration_is_refused_and_store_untouched(tmp_path):
    store = _create(tmp_path / "s.zarr")
    store.write_chunk(0, {"x": np.zeros((4, 3), np.float32)})
    with pytest.raises(StoreMismatchError, match="seed"):
        _create(tmp_path / "s.zarr", identity={"seed": 2})
    assert _create(tmp_path / "s.zarr").pending_chunks() == [1, 2]


def test_wrong_chunk_shape_is_refused_before_marking(tmp_path):
    store = _create(tmp_path / "s.zarr")
    with pytest.raises(ValueError):
        store.write_chunk(2, {"x": np.zeros((4, 3), np.float32)})  # last chunk has 2 rows
    assert store.pending_chunks() == [0, 1, 2]


def test_dimension_names_and_format_are_recorded(tmp_path):
    store = _create(tmp_path / "s.zarr")
    assert store.array("x").metadata.dimension_names == ("sample", "dim")
    assert store.meta["format"] == "test.kind"
    assert store.meta["format_version"] == FORMAT_VERSION == 2
    with pytest.raises(StoreError, match="not 'other.kind'"):
        ChunkedStore.open(tmp_path / "s.zarr", kind="other.kind")


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        ChunkedStore.open(tmp_path / "missing.zarr", kind="test.kind")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError):
        ChunkedStore.open(tmp_path / "plain", kind="test.kind")


def test_unwritable_location_leaves_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="writable"):
        _create(blocker / "s.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_creation_race_uses_the_store_the_other_writer_made(tmp_path, monkeypatch):
    import errno
    import os

    from rescore.engine import store as store_module

    real_replace = os.replace

    def lose_the_race(source, destination):
        if Path(source).parent != tmp_path:  # zarr's own writes inside the staging store
            return real_replace(source, destination)
        monkeypatch.setattr(store_module.os, "replace", real_replace)
        _create(Path(destination), identity=theirs)  # another process finishes first
        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(destination))

    theirs = {"seed": 1}
    monkeypatch.setattr(store_module.os, "replace", lose_the_race)
    store = _create(tmp_path / "s.zarr")
    assert store.pending_chunks() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # our staging copy is gone
    theirs = {"seed": 2}
    monkeypatch.setattr(store_module.os, "replace", lose_the_race)
    with pytest.raises(StoreMismatchError, match="another run configuration"):
        _create(tmp_path / "t.zarr")


def test_damaged_chunks_are_named_and_marked_pending(tmp_path):
    from rescore.engine.errors import DamagedStoreError

    store = _create(tmp_path / "s.zarr")
    for chunk in range(3):
        start, stop = store.chunk_range(chunk)
        store.write_chunk(chunk, {"x": np.full((stop - start, 3), chunk, np.float32)})
    (tmp_path / "s.zarr" / "x" / "c" / "1" / "0").write_bytes(b"\x00\x01")
    with pytest.raises(DamagedStoreError, match="array 'x' is damaged in chunk 1 "):
        store.array("x")[:]
    assert store.array("x")[:4].tolist() == [[0.0] * 3] * 4  # other chunks still read
    (tmp_path / "s.zarr" / "x" / "c" / "2" / "0").unlink()
    assert store.missing_chunk_files() == [2]
    with pytest.raises(DamagedStoreError, match="missing"):
        store.require_complete("reading")
    store.mark_pending([1])
    assert _create(tmp_path / "s.zarr").pending_chunks() == [1, 2]  # resume requeues 2 too


def test_chunks_of_fill_values_are_written_so_missing_means_damaged(tmp_path):
    store = _create(tmp_path / "s.zarr")
    store = ChunkedStore.open(tmp_path / "s.zarr", kind="test.kind")  # a later writer process
    store.write_chunk(0, {"x": np.full((4, 3), np.nan, np.float32)})  # e.g. inactive boundaries
    assert (tmp_path / "s.zarr" / "x" / "c" / "0" / "0").is_file()
    assert store.missing_chunk_files() == []
