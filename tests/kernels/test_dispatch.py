"""Backend choice: ref always works, numba is asked for or falls back only under auto."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from rescore.kernels import NumbaUnavailableError, _dispatch, manipulate, project, select_top_bottom


@pytest.fixture
def no_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import numba` fail, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "numba", None)
    _dispatch._announce.cache_clear()


def test_unknown_impl_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'auto', 'numba', 'ref'"):
        _dispatch.resolve("cuda")


def test_auto_picks_numba_when_present_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    _dispatch._announce.cache_clear()
    with caplog.at_level(logging.INFO, logger="rescore.kernels"):
        assert _dispatch.resolve("auto") == "numba"
        assert _dispatch.resolve("auto") == "numba"
    assert len(caplog.records) == 1
    assert "numba" in caplog.records[0].getMessage()


def test_numba_requested_but_missing_raises(no_numba: None) -> None:
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(NumbaUnavailableError, match="impl='ref'"):
        project(codes, codes[:2], impl="numba")


def test_auto_falls_back_to_ref_without_numba(
    no_numba: None, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((4, 3, 8)).astype(np.float32)
    directions = rng.standard_normal((2, 3, 8)).astype(np.float32)
    layer_sets = np.array([[True, False, True]])
    with caplog.at_level(logging.INFO, logger="rescore.kernels"):
        got = manipulate(codes, directions, layer_sets, 1.5, impl="auto")
    want = manipulate(codes, directions, layer_sets, 1.5, impl="ref")
    np.testing.assert_array_equal(got, want)
    assert "NumPy reference" in caplog.text


def test_package_imports_and_runs_where_numba_cannot_be_imported() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["numba"] = None
        import numpy as np
        from rescore.kernels import condition, manipulate, project, select_top_bottom
        rng = np.random.default_rng(0)
        x = rng.standard_normal((50, 6)).astype(np.float32)
        for impl in ("auto", "ref"):
            project(x, x[:2], impl=impl)
            select_top_bottom(x[:, 0], 5, impl=impl)
            condition(x[0], x[1:3], impl=impl)
            manipulate(x, x[:2, None], np.ones((1, 1), bool), 1.0, impl=impl)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_row_blocks_follow_the_storage_chunks(tmp_path) -> None:
    array = zarr.create_array(store=tmp_path / "a.zarr", shape=(23,), chunks=(4,), dtype="f4")
    assert list(_dispatch.row_blocks(array, 10)) == [(0, 8), (8, 16), (16, 23)]
    assert list(_dispatch.row_blocks(array, 3)) == [(i, min(i + 4, 23)) for i in range(0, 23, 4)]
    assert list(_dispatch.row_blocks(np.zeros(7), 3)) == [(0, 3), (3, 6), (6, 7)]


def test_float_inputs_are_required() -> None:
    with pytest.raises(ValueError, match=r"astype\(np.float32\)"):
        project(np.ones((3, 4), np.int64), np.ones((1, 4), np.float32), impl="ref")
    with pytest.raises(ValueError, match="chunk_rows"):
        select_top_bottom(np.arange(10.0), 2, chunk_rows=0, impl="ref")
