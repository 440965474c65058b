"""Boundary files: HiGAN / InterFaceGAN `.npy` normals plus rescore's JSON sidecar.

On disk, per semantic (the format other applications read):
    boundaries/<semantic>.npy   float32 unit normal, shape (1, D) for W or (1, L, D) for W+ (each
                                layer's normal unit-norm), exactly HiGAN's/InterFaceGAN's layout
    boundaries/<semantic>.json  sidecar: space, layers, accuracy, counts, chosen_num, solver,
                                offsets, store and model digests, format version

Reading accepts HiGAN/InterFaceGAN files too: a plain array (``np.load(allow_pickle=False)``) or
the pickled-dict variant ``{'boundary': array, ...}``, which is read through an unpickler that
admits only dicts, lists, strings, numbers and NumPy arrays/dtypes/scalars: a boundary file never
runs code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.export.session import LatentGeometry

from .errors import BoundaryError
from .version import __version__

BOUNDARY_FORMAT = "rescore.boundary"
BOUNDARY_FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]")

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Boundary:
    """A semantic's unit normal in W (shape (1, D)) or W+ (shape (1, L, D)) and its metadata."""

    name: str
    normal: np.ndarray = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def space(self) -> str:
        return "wp" if self.normal.ndim == 3 else "w"

    def directions(self, geometry: LatentGeometry) -> np.ndarray:
        """Per-layer displacement for a unit step, [L, D] float32.

        A W boundary moves every layer's code by psi_l * n, which is exactly HiGAN's
        truncation-aware per-layer strength (moving w by n before truncation); a W+ boundary moves
        layer l by its own normal n_l with strength 1, as HiGAN does for 'wp' boundaries.
        """
        self.check_fits(geometry)
        if self.space == "w":
            return (geometry.truncation[:, None] * self.normal.reshape(1, -1)).astype(np.float32)
        return self.normal[0].astype(np.float32)

    def check_fits(self, geometry: LatentGeometry) -> None:
        """Raise `BoundaryError` if its dimension or layer count differs from the model's."""
        dim = self.normal.shape[-1]
        if dim != geometry.w_dim:
            raise BoundaryError(
                f"boundary '{self.name}' has dimension {dim} but the model's W space has "
                f"{geometry.w_dim}; use boundaries fitted on this model"
            )
        if self.space == "wp" and self.normal.shape[1] != geometry.num_layers:
            raise BoundaryError(
                f"boundary '{self.name}' has {self.normal.shape[1]} layers but the model has "
                f"{geometry.num_layers}; use boundaries fitted on this model"
            )


def boundary_stem(semantic: str) -> str:
    """File stem for a semantic name (characters outside [A-Za-z0-9_.+-] become '_')."""
    return _SAFE_NAME.sub("_", semantic)


def save_boundary(directory: Path, boundary: Boundary) -> Path:
    """Write `<stem>.npy` (HiGAN layout) and `<stem>.json` atomically; return the .npy path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = boundary_stem(boundary.name)
    npy_path, json_path = directory / f"{stem}.npy", directory / f"{stem}.json"
    sidecar = {
        "format": BOUNDARY_FORMAT,
        "format_version": BOUNDARY_FORMAT_VERSION,
        "semantic": boundary.name,
        "space": boundary.space,
        "shape": list(boundary.normal.shape),
        "rescore_version": __version__,
        **boundary.metadata,
    }
    _atomic_write(npy_path, lambda f: np.save(f, boundary.normal.astype(np.float32)))
    _atomic_write(json_path, lambda f: f.write(json.dumps(sidecar, indent=2).encode()))
    return npy_path


def load_boundary(path: Path) -> Boundary:
    """Read a boundary `.npy` (rescore, HiGAN or InterFaceGAN) and its sidecar if present."""
    path = Path(path)
    if not path.is_file():
        raise BoundaryError(f"boundary file not found: {path}")
    array = _read_npy(path)
    if array.ndim == 2 and array.shape[0] == 1:
        normal = array
    elif array.ndim == 3 and array.shape[0] == 1:
        normal = array
    elif array.ndim == 1:
        normal = array[None]
    else:
        raise BoundaryError(
            f"{path} holds an array of shape {array.shape}; a boundary is (1, D) or (1, L, D)"
        )
    if not np.all(np.isfinite(normal)):
        raise BoundaryError(f"{path} contains NaN or inf values; refit the boundary")
    normal = _unit(normal.astype(np.float64), path).astype(np.float32)
    sidecar_path = path.with_suffix(".json")
    metadata: dict[str, Any] = {}
    name = path.stem.removesuffix("_boundary")
    if sidecar_path.is_file():
        try:
            metadata = json.loads(sidecar_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BoundaryError(
                f"boundary sidecar {sidecar_path} is not valid JSON ({error})"
            ) from error
        name = metadata.get("semantic", name)
    return Boundary(name=name, normal=normal, metadata=metadata)


def load_boundaries(paths: list[Path]) -> list[Boundary]:
    """Boundaries from files and/or directories (every `*.npy` in a directory, sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.glob("*.npy")))
        else:
            files.append(path)
    if not files:
        raise BoundaryError(
            f"no boundary .npy files found in {', '.join(map(str, paths))}; "
            f"run `rescore fit` first or pass boundary files"
        )
    boundaries = [load_boundary(f) for f in files]
    names = [b.name for b in boundaries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BoundaryError(
            f"several boundary files name the semantic(s) {', '.join(duplicates)}; "
            f"pass each semantic once"
        )
    return boundaries


def _unit(normal: np.ndarray, path: Path) -> np.ndarray:
    axis = -1
    norms = (
        np.linalg.norm(normal, axis=axis, keepdims=True)
        if normal.ndim == 3
        else np.linalg.norm(normal, keepdims=True)
    )
    if np.any(norms == 0):
        raise BoundaryError(f"{path} has a zero normal; refit the boundary")
    if np.any(np.abs(norms - 1.0) > 1e-3):
        log.warning(
            "boundary %s is not unit norm (norm %s); normalizing it", path, norms.ravel()[:3]
        )
    return normal / norms


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits only NumPy array / dtype / scalar reconstruction; everything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        pass  # an object array (HiGAN's pickled-dict variant): read it with the safe unpickler
    except (OSError, EOFError) as error:
        raise BoundaryError(f"{path} is not a readable .npy file ({error})") from error
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            payload = _ArrayOnlyUnpickler(io.BytesIO(handle.read())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError) as error:
        raise BoundaryError(
            f"{path} holds pickled objects other than a dict of arrays ({error}); refused: "
            f"a boundary file must never run code"
        ) from error
    content = (
        payload.item() if isinstance(payload, np.ndarray) and payload.dtype == object else payload
    )
    if isinstance(content, dict):
        content = content.get("boundary")
    if not isinstance(content, np.ndarray) or content.dtype == object:
        raise BoundaryError(
            f"{path} has no 'boundary' array; expected HiGAN's {{'boundary': array}}"
        )
    return content


def _atomic_write(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
