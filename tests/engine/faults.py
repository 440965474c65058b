"""Fault injection for store tests: a disk that fills up while a run writes."""

from __future__ import annotations

import errno
import os

import pytest


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, array: str, chunks: int) -> None:
    """Make zarr's local store raise ENOSPC for every chunk of `array` after the first `chunks`
    (what a full disk does mid-run); `monkeypatch.undo()` gives the disk its space back."""
    from zarr.storage import LocalStore

    original, written = LocalStore.set, [0]

    async def full_after_a_while(self, key, value):
        if key.startswith(f"{array}/c/"):
            written[0] += 1
            if written[0] > chunks:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        return await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full_after_a_while)
