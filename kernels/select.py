"""Top-k and bottom-k samples by score, streamed from a store without sorting or loading it all.

HiGAN fits a boundary on the `chosen_num` best and worst scored samples. Over a large store this
keeps, per side, a running set of the k best candidates while reading `chunk_rows` rows at a
time; only the final 2k candidates are sorted. Ties go to the smaller index (what a stable full
sort gives) and NaN/inf scores are counted, never selected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._dispatch import Backend, Impl, RowArray, numba_module, resolve, row_blocks


@dataclass(frozen=True, eq=False)
class Selection:
    """Indices of the k highest and k lowest finite scores.

    top: int64 [k], by score descending; bottom: int64 [k], by score ascending; equal scores in
    index order in both. nonfinite: how many NaN/inf scores were skipped.
    """

    top: np.ndarray
    bottom: np.ndarray
    nonfinite: int


def select_top_bottom(
    source: RowArray,
    k: int,
    *,
    column: int | None = None,
    chunk_rows: int = 65536,
    impl: Impl = "auto",
) -> Selection:
    """The k best and k worst samples of `source` ([N] scores, or [N, S] with `column` picking S).

    Equals `np.argsort(-x, kind="stable")[:k]` and `np.argsort(x, kind="stable")[:k]` over the
    finite scores x, in O(N log k) time and O(k + chunk_rows) memory. With heavy ties at the
    median the two lists can share indices (exactly as those two sorts would).
    """
    backend = resolve(impl)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    shape = tuple(int(n) for n in source.shape)
    if len(shape) == 2:
        if column is None:
            raise ValueError(f"source has {shape[1]} columns {shape}; pass column= to pick one")
        if not -shape[1] <= column < shape[1]:
            raise ValueError(f"column {column} is out of range for {shape[1]} columns")
    elif len(shape) == 1:
        if column is not None:
            raise ValueError(f"source is 1-D {shape}; leave column=None")
    else:
        raise ValueError(f"source must be [N] or [N, S] scores, got shape {shape}")
    if np.dtype(source.dtype).kind not in "fiu":
        raise ValueError(f"source must hold real numbers, got dtype {source.dtype}")
    if shape[0] < 2 * k:
        raise ValueError(f"source has {shape[0]} scores, fewer than 2k = {2 * k}; lower k")

    top, bottom = _running_best(k, +1.0, backend), _running_best(k, -1.0, backend)
    nonfinite = 0
    for start, stop in row_blocks(source, chunk_rows):
        rows = source[start:stop] if column is None else source[start:stop, column]
        values = np.ascontiguousarray(rows)  # [n]
        if values.dtype not in (np.float32, np.float64):  # ints, float16, non-native byte order
            values = values.astype(np.float64)
        nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
        top.offer(values, start)
        bottom.offer(values, start)
    finite = shape[0] - nonfinite
    if finite < 2 * k:
        raise ValueError(
            f"only {finite} of {shape[0]} scores are finite ({nonfinite} NaN/inf), fewer than "
            f"2k = {2 * k}; lower k or fix the scores"
        )
    return Selection(top=top.ranked(), bottom=bottom.ranked(), nonfinite=nonfinite)


class _RunningBest:
    """The k largest keys (key = sign * score) seen so far, ties to the smaller index.

    Rows arrive in index order, so once k candidates are held a new value enters only if its key
    is strictly greater than the worst held key: on a tie the held, smaller index wins.
    """

    def __init__(self, k: int, sign: float):
        self.k, self.sign = k, sign
        self.keys = np.empty(0, np.float64)  # [<= k]
        self.index = np.empty(0, np.int64)  # [<= k]

    def offer(self, values: np.ndarray, start: int) -> None:
        """Consider values [n] (float, may hold NaN/inf) at indices start .. start + n - 1."""
        finite = np.flatnonzero(np.isfinite(values))  # [f]
        keys = self.sign * values[finite].astype(np.float64)  # [f]
        index = start + finite.astype(np.int64)  # [f]
        if self.keys.size == self.k:
            better = keys > self.keys.min()
            keys, index = keys[better], index[better]
        if keys.size == 0:
            return
        keys = np.concatenate([self.keys, keys])
        index = np.concatenate([self.index, index])
        if keys.size > self.k:
            keys, index = _k_largest(keys, index, self.k)
        self.keys, self.index = keys, index

    def ranked(self) -> np.ndarray:
        """Held indices by key descending, ties by index ascending -> int64 [k]."""
        return self.index[np.lexsort((self.index, -self.keys))]


def _k_largest(keys: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k entries with the largest keys, ties to the smallest index (unordered)."""
    kth = np.partition(keys, keys.size - k)[keys.size - k]  # the k-th largest key
    above = keys > kth
    tied = np.flatnonzero(keys == kth)
    room = k - int(np.count_nonzero(above))
    keep_tied = tied[np.argsort(index[tied], kind="stable")[:room]]
    keep = np.concatenate([np.flatnonzero(above), keep_tied])
    return keys[keep], index[keep]


class _HeapBest:
    """Same contract as `_RunningBest`, kept as a binary heap updated by a numba kernel.

    The heap root is the worst held entry: smallest key, and among equal keys the largest index.
    """

    def __init__(self, k: int, sign: float):
        self.sign = sign
        self.keys = np.empty(k, np.float64)  # [k] heap order
        self.index = np.empty(k, np.int64)  # [k]
        self.size = 0
        self._offer = _compiled()

    def offer(self, values: np.ndarray, start: int) -> None:
        """Consider values [n] (float, may hold NaN/inf) at indices start .. start + n - 1."""
        self.size = self._offer(values, start, self.sign, self.keys, self.index, self.size)

    def ranked(self) -> np.ndarray:
        """Held indices by key descending, ties by index ascending -> int64 [k]."""
        keys, index = self.keys[: self.size], self.index[: self.size]
        return index[np.lexsort((index, -keys))]


def _running_best(k: int, sign: float, backend: Backend) -> _RunningBest | _HeapBest:
    return _HeapBest(k, sign) if backend == "numba" else _RunningBest(k, sign)


@functools.cache
def _compiled() -> Callable[..., int]:
    """The numba heap update, compiled (or loaded from numba's cache) on first use."""
    numba = numba_module()

    @numba.njit(cache=True)
    def offer_numba(values, start, sign, keys, index, size):
        capacity = keys.shape[0]
        for j in range(values.shape[0]):
            value = values[j]
            if not np.isfinite(value):
                continue
            key = sign * np.float64(value)
            idx = start + j
            if size < capacity:
                # Append and sift up; the new entry has the largest index, so it loses ties.
                pos = size
                size += 1
                while pos > 0:
                    parent = (pos - 1) >> 1
                    if key <= keys[parent]:
                        keys[pos] = keys[parent]
                        index[pos] = index[parent]
                        pos = parent
                    else:
                        break
                keys[pos] = key
                index[pos] = idx
            elif key > keys[0]:
                # Replace the worst entry (the root) and sift down, moving the worse child up.
                pos = 0
                while True:
                    child = 2 * pos + 1
                    if child >= capacity:
                        break
                    right = child + 1
                    if right < capacity and (
                        keys[right] < keys[child]
                        or (keys[right] == keys[child] and index[right] > index[child])
                    ):
                        child = right
                    if keys[child] < key or (keys[child] == key and index[child] > idx):
                        keys[pos] = keys[child]
                        index[pos] = index[child]
                        pos = child
                    else:
                        break
                keys[pos] = key
                index[pos] = idx
        return size

    return offer_numba
