"""`rescore check`: find damaged chunks in a run's stores and mark them for recomputation.

For each store of a run (samples, rescore, projections) every chunk of every array is read back
(Zarr's crc32c codec verifies each one) and every completed unit's chunk files must exist. A
damaged unit's ledger entry is reset to 0, so rerunning the command that wrote the store recomputes
exactly the damaged units; chunk values depend only on (seed, index), so the result is identical to
an undamaged run. Damage outside the units (store metadata, static arrays such as `w_avg` or
`directions`) cannot be recomputed unit by unit: the report says to remove the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreError
from .layout import RunDirectory
from .location import Location, StoreUrl
from .project import PROJECTIONS_KIND
from .rescore import RESCORE_KIND
from .sample import SAMPLES_KIND
from .store import LEDGER, ChunkedStore

# store kind -> the command that writes it
_WRITERS = {
    SAMPLES_KIND: "rescore sample",
    RESCORE_KIND: "rescore rescore",
    PROJECTIONS_KIND: "rescore project",
}


@dataclass
class StoreReport:
    """What `check_store` found in one store."""

    path: Location
    writer: str
    num_chunks: int = 0
    damaged_chunks: list[int] = field(default_factory=list)  # units marked pending again
    damaged_static: list[str] = field(default_factory=list)  # arrays that are not per unit
    unreadable: str | None = None  # the store cannot be opened at all
    unchecked: bool = False  # format 1: no checksums

    @property
    def ok(self) -> bool:
        return not (self.damaged_chunks or self.damaged_static or self.unreadable)

    def describe(self) -> str:
        """One line for the user."""
        name = self.path.name
        if self.unreadable:
            return f"{name}: unreadable ({self.unreadable}); remove it and rerun `{self.writer}`"
        if self.damaged_static:
            return (
                f"{name}: array(s) {', '.join(self.damaged_static)} damaged (not recomputable "
                f"unit by unit); remove {self.path} and rerun `{self.writer}`"
            )
        if self.damaged_chunks:
            listed = ", ".join(map(str, self.damaged_chunks[:12]))
            more = " ..." if len(self.damaged_chunks) > 12 else ""
            return (
                f"{name}: {len(self.damaged_chunks)} of {self.num_chunks} chunk(s) damaged "
                f"({listed}{more}), marked pending; rerun `{self.writer}` with the same options "
                f"to recompute them"
            )
        note = " (format 1: no checksums, damage not detectable)" if self.unchecked else ""
        return f"{name}: ok, {self.num_chunks} chunk(s){note}"


def check_run(run: RunDirectory) -> list[StoreReport]:
    """Check every store present in the run directory; raise if there is none."""
    stores = [
        (run.samples, SAMPLES_KIND),
        (run.rescore_store, RESCORE_KIND),
        (run.projections, PROJECTIONS_KIND),
    ]
    present = [(path, kind) for path, kind in stores if path.exists()]
    if not present:
        raise StoreError(f"no store found in {run.root}; give the run directory with -o DIR")
    return [check_store(path, kind) for path, kind in present]


def check_store(path: Location, kind: str) -> StoreReport:
    """Read every chunk of the store at `path`; mark damaged units pending."""
    report = StoreReport(path if isinstance(path, StoreUrl) else Path(path), _WRITERS[kind])
    try:
        store = ChunkedStore.open(path, kind=kind)
        report.num_chunks = store.num_chunks
        report.unchecked = store.meta.get("format_version", 1) < 2
        ledger = _read_ledger(store)
        per_unit = store.sample_arrays()
        static = [n for n in store.array_names() if n != LEDGER and n not in per_unit]
    except StoreError as error:
        report.unreadable = str(error).split(";")[0]
        return report
    for name in sorted(static):
        if not _readable(lambda name=name: store.array(name)[...]):
            report.damaged_static.append(name)
    arrays = store.sample_arrays()
    damaged = {chunk for chunk, entry in enumerate(ledger) if entry is None}
    completed = [chunk for chunk, entry in enumerate(ledger) if entry]
    for chunk in completed:
        start, stop = store.chunk_range(chunk)
        rows = slice(start, stop)
        if not all(_readable(lambda n=n, rows=rows: store.array(n)[rows]) for n in arrays):
            damaged.add(chunk)
    damaged.update(_missing(store, [c for c in completed if c not in damaged]))
    report.damaged_chunks = sorted(damaged)
    if report.damaged_chunks:
        store.mark_pending(report.damaged_chunks)
    return report


def _read_ledger(store: ChunkedStore) -> list[bool | None]:
    """Each unit's ledger entry: True/False, or None when its ledger chunk is damaged."""
    ledger = store.array(LEDGER)
    entries: list[bool | None] = []
    for chunk in range(store.num_chunks):
        try:
            entries.append(bool(ledger[chunk]))
        except StoreError:
            entries.append(None)
    return entries


def _missing(store: ChunkedStore, chunks: list[int]) -> list[int]:
    try:
        return store.missing_chunk_files(chunks)
    except StoreError:  # ledger entries damaged too: those units are reported already
        return []


def _readable(read) -> bool:
    try:
        read()
    except StoreError:
        return False
    return True
