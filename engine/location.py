"""Where a run's outputs live: a local directory, or a prefix in an fsspec object store.

`--out` is a local path (or ``file://`` URL) or an fsspec URL such as ``s3://bucket/runs/a``
(``gs://``, ``az://``, ``memory://`` for the Python API, ...). Local paths stay `pathlib.Path`s
and everything about them is as before. A URL becomes a `StoreUrl`: the few path operations the
engine uses on a run directory (``/``, name, parent, exists), the zarr store object of a Zarr
group there (`zarr.storage.FsspecStore`: zarr's store abstraction writes the chunks), and whole
small files (sidecars, CSV, PNG) written with one PUT each.

Credentials and endpoints come from fsspec's own configuration (the backend's environment
variables such as AWS_ENDPOINT_URL / AWS_PROFILE, fsspec config files, ``FSSPEC_S3_*``) plus
`storage_options` (``--storage-option KEY=VALUE``). Storage options travel with the location to
Ray workers and are never written into a store (`str()` of a location is its URL alone).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputError

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://(.*)$")
# the fsspec backends whose packages rescore's extras name
_EXTRAS = {"s3": 'pip install "rescore[s3]"', "s3a": 'pip install "rescore[s3]"'}


def is_url(text: str | Path) -> bool:
    """Whether `text` names a location by URL (``protocol://...``), ``file://`` included."""
    return isinstance(text, str) and _URL.match(text) is not None


@dataclass(frozen=True)
class StoreUrl:
    """A path inside an fsspec file system: protocol, path without it, and storage options."""

    protocol: str
    path: str  # "bucket/runs/a": no protocol, no trailing slash
    options: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return f"{self.protocol}://{self.path}"

    def __truediv__(self, name: str) -> StoreUrl:
        return StoreUrl(self.protocol, f"{self.path}/{name}", self.options)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> StoreUrl:
        return StoreUrl(self.protocol, self.path.rsplit("/", 1)[0], self.options)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def with_suffix(self, suffix: str) -> StoreUrl:
        return self.parent / f"{self.stem}{suffix}"

    def filesystem(self) -> Any:
        """The fsspec file system (cached by fsspec per protocol and options)."""
        import fsspec

        return fsspec.filesystem(self.protocol, **dict(self.options))

    def exists(self) -> bool:
        """A file, or a "directory" (a prefix with objects under it)."""
        return bool(_call(self, lambda fs: fs.exists(self.path)))

    def is_file(self) -> bool:
        return bool(_call(self, lambda fs: fs.isfile(self.path)))

    def is_dir(self) -> bool:
        return bool(_call(self, lambda fs: fs.isdir(self.path)))

    def glob(self, pattern: str) -> list[StoreUrl]:
        """Entries of this directory matching `pattern` (one level), sorted."""
        found = _call(self, lambda fs: fs.glob(f"{self.path}/{pattern}"))
        return sorted(self / str(p).rsplit("/", 1)[-1] for p in found)

    def __lt__(self, other: StoreUrl) -> bool:
        return str(self) < str(other)

    def read_bytes(self) -> bytes:
        """The whole file; `FileNotFoundError` when there is none."""
        return _call(self, lambda fs: fs.cat_file(self.path), missing=True)

    def write_bytes(self, data: bytes) -> None:
        """One PUT: object stores show a new object whole or not at all."""
        _call(self, lambda fs: fs.pipe_file(self.path, data))

    def upload(self, local: Path) -> None:
        """Copy the local file `local` here (one object)."""
        _call(self, lambda fs: fs.put_file(str(local), self.path))

    def remove(self) -> None:
        """Remove this file or prefix and everything under it (no error when absent)."""
        if self.exists():
            _call(self, lambda fs: fs.rm(self.path, recursive=True))

    def zarr_store(self, *, read_only: bool = False) -> Any:
        """zarr's store object for a Zarr hierarchy rooted here."""
        from zarr.storage import FsspecStore

        options = dict(self.options)
        url = str(self)
        return _call(
            self, lambda fs: FsspecStore.from_url(url, storage_options=options, read_only=read_only)
        )


Location = Path | StoreUrl


def as_location(
    value: str | Path | StoreUrl, storage_options: Mapping[str, Any] | None = None
) -> Location:
    """A local `Path` (paths and ``file://`` URLs) or a checked `StoreUrl` (other URLs).

    Raises `OutputError` for an unknown protocol, a missing backend package, or storage options
    given for a local path."""
    if isinstance(value, StoreUrl):
        return value
    match = _URL.match(value) if isinstance(value, str) else None
    if match is None or match.group(1).lower() in ("file", "local"):
        if storage_options:
            raise OutputError(
                f"--storage-option applies to object-store URLs, not the local path {value}; "
                f"drop it or give an URL such as s3://bucket/run"
            )
        return Path(match.group(2) if match else value)
    protocol, path = match.group(1).lower(), match.group(2).strip("/")
    _check_protocol(protocol, str(value))
    if not path:
        raise OutputError(f"{value} names no bucket or path; use e.g. {protocol}://bucket/run")
    options = tuple(sorted((storage_options or {}).items()))
    return StoreUrl(protocol, path, options)


def parse_storage_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> fsspec storage options; values are JSON when they parse as JSON
    (``anon=true``, ``client_kwargs={"region_name": "eu-west-1"}``), else strings."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise OutputError(
                f"--storage-option {item!r} is not KEY=VALUE; e.g. "
                f"--storage-option endpoint_url=http://localhost:9000"
            )
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options


def check_writable(location: StoreUrl) -> None:
    """Prove that `location` can be written (endpoint, bucket, credentials) before any work."""
    probe = location / f".write-test-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    _call(probe, lambda fs: fs.rm_file(probe.path))


def _check_protocol(protocol: str, url: str) -> None:
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        package = _package_of(protocol)
        install = _EXTRAS.get(protocol, f"pip install {package}")
        raise OutputError(
            f"{url} needs {package} (the fsspec backend for '{protocol}://'), which is not "
            f"installed; {install}"
        ) from None
    except ValueError:
        raise OutputError(
            f"unknown storage protocol '{protocol}' in {url}; use a local path or an fsspec URL "
            f"(s3://, gs://, az://, memory://, ...)"
        ) from None


def _package_of(protocol: str) -> str:
    """The package that implements `protocol` in fsspec's registry (s3 -> s3fs, gs -> gcsfs)."""
    from fsspec.registry import known_implementations

    return known_implementations.get(protocol, {}).get("class", protocol).split(".")[0]


def _call(location: StoreUrl, operation: Any, *, missing: bool = False) -> Any:
    """Run `operation(fs)`, turning the backend's errors (no such bucket, no credentials, an
    unreachable endpoint, refused access) into an `OutputError` naming the fix; with `missing`,
    a `FileNotFoundError` is the caller's to handle."""
    try:
        return operation(location.filesystem())
    except OutputError:
        raise
    except FileNotFoundError:
        if missing:
            raise
        raise OutputError(
            f"cannot access {location} (no such bucket or container); create it, or fix the "
            f"URL given to --out"
        ) from None
    except Exception as error:  # botocore, aiohttp, gcsfs, adlfs: no common base class
        raise OutputError(
            f"cannot access {location} ({_short(error)}); check the endpoint, bucket and "
            f"credentials (the backend's environment, e.g. AWS_ENDPOINT_URL and "
            f"AWS_ACCESS_KEY_ID, or --storage-option KEY=VALUE)"
        ) from error


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text if len(text) <= 140 else text[:137] + "..."
