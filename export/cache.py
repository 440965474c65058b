"""On-disk caches of compiled artifacts, keyed by everything that invalidates them.

Two kinds of entries, both rebuilt rather than trusted when anything in their key changes:
    ONNX graphs   key: digest of the models (weights *and* the plain attributes that change their
                  forward), export settings, rescore and torch versions  (see `graphs.py`)
    engines       key: `EngineKey` (ONNX digest, TensorRT version, GPU name and compute
                  capability, precision, batch profile); `EngineCache` stores and checks them
An entry whose recorded key differs from the one asked for (stale or foreign), or that cannot be
read back intact (corrupt), is rebuilt, never loaded. Temporary files and export scratch
directories a killed process left behind are removed on the next use (`clean_cache_leftovers`).
Nothing here needs a GPU: keys are plain data, and the build step is a callable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rescore.models.errors import RescoreError

ENGINE_FORMAT = "rescore.tensorrt-engine"
ENGINE_FORMAT_VERSION = 1
_SIMPLE = (bool, int, float, str, type(None))

log = logging.getLogger(__name__)


class CorruptCacheError(RescoreError):
    """A cache entry exists but cannot be read back intact."""


def rescore_version() -> str:
    """The installed rescore version (recorded in every artifact)."""
    try:
        return version("rescore")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rescore`` (``~/.cache/rescore`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "rescore"


def model_digest(generator: nn.Module, predictors: Sequence[nn.Module]) -> str:
    """SHA-256 over what determines the models' outputs, in order: generator, then predictors.

    For every submodule: its class and its plain attributes (numbers, strings, flags such as a
    truncation psi or a weight clamp that live outside the state dict); for every parameter and
    buffer, persistent or not: name, dtype, shape and bytes.
    """
    digest = hashlib.sha256()
    for index, model in enumerate([generator, *predictors]):
        for name, module in model.named_modules(prefix=f"model{index}"):
            attributes = {
                key: _plain(value)
                for key, value in sorted(vars(module).items())
                if key != "training" and _plain(value) is not None
            }
            cls = type(module)
            digest.update(
                json.dumps(
                    [name, f"{cls.__module__}.{cls.__qualname__}", attributes],
                    sort_keys=True,
                    default=str,
                ).encode()
            )
        tensors = [*model.named_parameters(), *model.named_buffers()]
        for name, tensor in tensors:
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def graph_cache_key(model: str, settings: dict[str, Any]) -> str:
    """Key of a directory of exported graphs: models, export settings, tool versions."""
    fields = {
        "model_digest": model,
        "settings": settings,
        "rescore_version": rescore_version(),
        "torch_version": torch.__version__,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes a serialized TensorRT engine valid (or not) to load here."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    profile: tuple[int, int, int]  # min, opt, max batch

    def as_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["compute_capability"] = list(self.compute_capability)
        fields["profile"] = list(self.profile)
        return fields

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


class EngineCache:
    """Serialized engines under ``root/engines/<key digest>.engine`` with a JSON record beside.

    The record holds the full key and the engine's SHA-256. The engine file is written before its
    record (both atomically), so a record always describes a complete file.
    """

    def __init__(self, root: Path) -> None:
        self.directory = Path(root) / "engines"

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        """(engine file, record file) for `key`."""
        stem = key.digest()[:32]
        return self.directory / f"{stem}.engine", self.directory / f"{stem}.json"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for `key`, or None when there is none or it was built for another key.

        Raises `CorruptCacheError` when the record is unreadable or the engine file is missing,
        truncated or altered.
        """
        engine, record = self.paths(key)
        if not record.exists():
            return None
        fix = f"delete {engine} and {record} to rebuild the engine"
        try:
            meta = json.loads(record.read_text(encoding="utf-8"))
            stored_key, expected_sha = meta["key"], meta["engine_sha256"]
            valid = meta.get("format") == ENGINE_FORMAT
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise CorruptCacheError(
                f"engine cache record {record} is unreadable ({error}); {fix}"
            ) from error
        if not valid:
            raise CorruptCacheError(f"{record} is not a rescore engine cache record; {fix}")
        if stored_key != key.as_dict():
            changed = sorted(k for k, v in key.as_dict().items() if stored_key.get(k) != v)
            log.warning(
                "cached engine %s was built for another %s; rebuilding it",
                engine.name,
                ", ".join(changed),
            )
            return None
        try:
            blob = engine.read_bytes()
        except OSError as error:
            raise CorruptCacheError(
                f"cached engine {engine} cannot be read ({error}); {fix}"
            ) from error
        if hashlib.sha256(blob).hexdigest() != expected_sha:
            raise CorruptCacheError(
                f"cached engine {engine} does not match its record (truncated or altered); {fix}"
            )
        return blob

    def store(self, key: EngineKey, blob: bytes) -> Path:
        """Write `blob` as the engine for `key`; returns the engine path."""
        engine, record = self.paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(engine, blob)
        meta = {
            "format": ENGINE_FORMAT,
            "format_version": ENGINE_FORMAT_VERSION,
            "key": key.as_dict(),
            "engine_sha256": hashlib.sha256(blob).hexdigest(),
            "rescore_version": rescore_version(),
        }
        _write_atomic(record, (json.dumps(meta, indent=1) + "\n").encode())
        return engine

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> bytes:
        """The cached engine for `key`, or `build()`'s result, stored for next time. A corrupt
        entry is rebuilt (and replaced)."""
        try:
            blob = self.load(key)
        except CorruptCacheError as error:
            log.warning("%s; rebuilding it", str(error).split(";")[0])
            blob = None
        if blob is None:
            log.info(
                "building TensorRT engine %s (%s, batch profile %s)",
                key.digest()[:12],
                key.precision,
                key.profile,
            )
            blob = build()
            self.store(key, blob)
        return blob


def _plain(value: Any) -> Any:
    """A JSON-able form of simple attribute values; None for anything else (modules, caches)."""
    if isinstance(value, _SIMPLE) and value is not None:
        return value
    if isinstance(value, tuple | list) and all(isinstance(v, _SIMPLE) for v in value):
        return list(value)
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_bytes(data)
    os.replace(staged, path)


def discard_graph(path: Path) -> None:
    """Remove a cached graph, its sidecar and its external data (before exporting it again)."""
    side = path.with_suffix(".json")
    names: list = []
    try:
        names = list(json.loads(side.read_text(encoding="utf-8")).get("external_data", []))
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    for name in names:
        if isinstance(name, str) and name and Path(name).name == name and name not in (".", ".."):
            (path.parent / name).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    side.unlink(missing_ok=True)


def clean_cache_leftovers(cache_dir: Path | None) -> None:
    """Remove stale temporary files and export scratch directories from the cache (what a killed
    export or engine build left); entries in use by a running process are younger and kept."""
    from rescore.engine.atomic import clean_leftovers

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for directory in (root / "engines", *sorted((root / "onnx").glob("*"))):
        if directory.is_dir():
            clean_leftovers(directory)
