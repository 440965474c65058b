"""Boundary files: HiGAN / InterFaceGAN `.npy` normals plus rescore's JSON sidecar.

On disk, per semantic (the format other applications read):
    boundaries/<semantic>.npy   float32 unit normal, shape (1, D) for W or (1, L, D) for W+ (each
                                layer's normal unit-norm), exactly HiGAN's/InterFaceGAN's layout
    boundaries/<semantic>.json  sidecar: space, layers, accuracy, counts, chosen_num, solver,
                                offsets, store and model digests, format version

Reading accepts HiGAN/InterFaceGAN files too: a plain array (``np.load(allow_pickle=False)``) or
the pickled-dict variant ``{'boundary': array, 'meta_data': {'manipulate_layers': '6-11', ...}}``,
which is read through an unpickler that admits only dicts, lists, strings, numbers and NumPy
arrays/dtypes/scalars: a boundary file never runs code.

Every boundary lives in one latent space: 'z' (moved in z, then mapped and truncated again; all
layers only, as HiGAN does), 'w' (one normal for every layer) or 'wp' (one normal per layer). The
space comes from the user (`FILE:z`), a HiGAN boundary list (`(name, z): path`), the sidecar, or
the array's shape; a file whose name marks Z space (InterFaceGAN's `<model>_<attr>_boundary.npy`
without `_w`, PGGAN files, `*_z` directories) must be given its space explicitly.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rescore.export.geometry import LatentGeometry

from .atomic import write_bytes_atomic
from .errors import BoundaryError
from .location import Location, StoreUrl, as_location
from .version import __version__

BOUNDARY_FORMAT = "rescore.boundary"
BOUNDARY_FORMAT_VERSION = 1
SPACES = ("z", "w", "wp")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]")
# InterFaceGAN names its files <model>_<dataset>_<attribute>[_c_<conditions>][_w]_boundary.npy:
# without `_w` they are Z-space normals (PGGAN has no W at all).
_INTERFACEGAN_FILE = re.compile(r"^(pggan|stylegan2?)_[A-Za-z0-9]+_.+_boundary$")
# HiGAN keeps its files in <model>_<dataset>/ directories (stylegan_bedroom/, stylegan2_church/).
_FAMILY_PREFIX = re.compile(r"^(pggan|stylegan|stylegan2|stylegan3|biggan)_[A-Za-z0-9]")

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Boundary:
    """A semantic's unit normal and its metadata.

    Shapes: (1, Z) in 'z', (1, D) in 'w', (1, L, D) in 'wp'. `space` defaults to the metadata's
    `space` (the sidecar's), else to what the shape says ('wp' for 3-d, else 'w').
    """

    name: str
    normal: np.ndarray = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    space: str = ""

    def __post_init__(self) -> None:
        space = self.space or self.metadata.get("space") or ("wp" if self.normal.ndim == 3 else "w")
        if space not in SPACES:
            raise BoundaryError(
                f"boundary '{self.name}' has unknown space '{space}'; "
                f"use one of {', '.join(SPACES)}"
            )
        if (self.normal.ndim == 3) != (space == "wp"):
            raise BoundaryError(
                f"boundary '{self.name}' of shape {self.normal.shape} cannot be a '{space}' "
                f"boundary; (1, L, D) arrays are 'wp', (1, D) arrays are 'z' or 'w'"
            )
        object.__setattr__(self, "space", space)

    @property
    def family(self) -> str | None:
        """Generator family the boundary was fitted on (sidecar `family`, else its generator name);
        None for files without a sidecar."""
        family = self.metadata.get("family")
        if family:
            return str(family)
        generator = self.metadata.get("model", {}).get("generator") or {}
        return generator.get("name") if isinstance(generator, dict) else None

    @property
    def manipulate_layers(self) -> str | None:
        """HiGAN's recommended layers ('6-11') from a pickled-dict file's meta_data, if any."""
        layers = self.metadata.get("manipulate_layers")
        return None if layers in (None, "") else str(layers)

    @property
    def layer_wise(self) -> bool:
        """False for Z boundaries: they move z, so only the all-layers row exists."""
        return self.space != "z"

    def directions(self, geometry: LatentGeometry) -> np.ndarray:
        """Per-layer displacement of wp for a unit step, [L, D] float32.

        A W boundary moves every layer's code by psi_l * n, which is exactly HiGAN's
        truncation-aware per-layer strength (moving w by n before truncation); a W+ boundary moves
        layer l by its own normal n_l with strength 1, as HiGAN does for 'wp' boundaries. A Z
        boundary has no fixed displacement in wp (z is moved, then mapped): zeros.
        """
        self.check_fits(geometry)
        if self.space == "z":
            return np.zeros((geometry.num_layers, geometry.w_dim), np.float32)
        if self.space == "w":
            return (geometry.truncation[:, None] * self.normal.reshape(1, -1)).astype(np.float32)
        return self.normal[0].astype(np.float32)

    def check_fits(self, geometry: LatentGeometry) -> None:
        """Raise `BoundaryError` if its dimension or layer count differs from the model's."""
        dim = self.normal.shape[-1]
        expected = geometry.z_dim if self.space == "z" else geometry.w_dim
        if dim != expected:
            raise BoundaryError(
                f"boundary '{self.name}' has dimension {dim} but the model's "
                f"{self.space.upper()} space has {expected}; use boundaries fitted on this model"
            )
        if self.space == "wp" and self.normal.shape[1] != geometry.num_layers:
            raise BoundaryError(
                f"boundary '{self.name}' has {self.normal.shape[1]} layers but the model has "
                f"{geometry.num_layers}; use boundaries fitted on this model"
            )


def check_family(
    boundaries: list[Boundary], family: str | None, *, alias: str | None = None, force: bool = False
) -> None:
    """Refuse boundaries fitted on another generator family (StyleGAN2 on StyleGAN v1, ...).

    `family` is the model's family (its `family` attribute); `alias` another name it answers to
    (the registry name it was built from, which plug-ins' boundaries record). Files without a
    recorded family (HiGAN / InterFaceGAN files outside their folders) pass; `force` skips it.
    """
    names = {name for name in (family, alias) if name}
    if force or not names:
        return
    foreign = [f"{b.name} ({b.family})" for b in boundaries if b.family and b.family not in names]
    if foreign:
        raise BoundaryError(
            f"boundaries fitted on another generator family than this "
            f"'{family or alias}' model: {', '.join(foreign[:4])}; use boundaries of this model "
            f"or pass --force-family"
        )


def check_store(boundaries: list[Boundary], identity_sha256: str, *, force: bool = False) -> None:
    """Refuse boundaries whose sidecar says they were fitted on another samples store.

    `identity_sha256` is the digest of the run's samples store identity (`fit.identity_digest`);
    files without a recorded store pass; `force` skips the check.
    """
    if force:
        return
    foreign = [
        f"{b.name} (fitted on {b.metadata['store'].get('path', '?')})"
        for b in boundaries
        if isinstance(b.metadata.get("store"), dict)
        and b.metadata["store"].get("identity_sha256") not in (None, identity_sha256)
    ]
    if foreign:
        raise BoundaryError(
            f"boundaries fitted on another samples store than this run's: "
            f"{', '.join(foreign[:3])}; fit them on this run or pass --force-store"
        )


def boundary_stem(semantic: str) -> str:
    """File stem for a semantic name (characters outside [A-Za-z0-9_.+-] become '_')."""
    return _SAFE_NAME.sub("_", semantic)


def save_boundary(directory: Location, boundary: Boundary) -> Location:
    """Write `<stem>.npy` (HiGAN layout) and `<stem>.json` atomically (locally or on an object
    store); return the .npy path."""
    if not isinstance(directory, StoreUrl):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
    stem = boundary_stem(boundary.name)
    npy_path, json_path = directory / f"{stem}.npy", directory / f"{stem}.json"
    sidecar = {
        "format": BOUNDARY_FORMAT,
        "format_version": BOUNDARY_FORMAT_VERSION,
        "semantic": boundary.name,
        "shape": list(boundary.normal.shape),
        "rescore_version": __version__,
        **boundary.metadata,
        "space": boundary.space,
        "family": boundary.family,
    }
    npy = io.BytesIO()
    np.save(npy, boundary.normal.astype(np.float32))
    write_bytes_atomic(npy_path, npy.getvalue())
    write_bytes_atomic(json_path, json.dumps(sidecar, indent=2).encode())
    return npy_path


def parse_boundary_argument(text: str | Path) -> tuple[Path, str | None]:
    """'FILE', 'FILE:z', 'FILE:w' or 'FILE:wp' -> (path, space or None)."""
    text = str(text)
    stem, sep, space = text.rpartition(":")
    if sep and space.lower() in SPACES and stem:
        return Path(stem), space.lower()
    return Path(text), None


def load_boundary(
    path: Location | str, space: str | None = None, *, name: str | None = None
) -> Boundary:
    """Read a boundary `.npy` (rescore, HiGAN or InterFaceGAN) and its sidecar if present.

    `space` is the user's word on the file's latent space ('z', 'w', 'wp'); `name` names its
    semantic (a HiGAN boundary list does). Without a sidecar, the semantic is the file name less
    HiGAN's `_boundary` suffix or InterFaceGAN++'s `boundary_` prefix.
    """
    path = as_location(path)  # a local path, or an object-store URL
    if not path.is_file():
        raise BoundaryError(f"boundary file not found: {path}")
    array, extra = _read_npy(path)
    array = _check_values(array, path)
    if array.ndim in (2, 3) and array.shape[0] == 1:
        normal = array
    elif array.ndim == 1:
        normal = array[None]
    else:
        raise BoundaryError(
            f"{path} holds an array of shape {array.shape}; a boundary is (1, D) or (1, L, D)"
        )
    normal = _unit(normal.astype(np.float64), path).astype(np.float32)
    sidecar_path = path.with_suffix(".json")
    metadata: dict[str, Any] = dict(extra)
    family = _family_named_by_file(path)
    if family:
        metadata["family"] = family  # a sidecar's own record (below) takes precedence
    semantic = _semantic_from_file_name(path.stem)
    if sidecar_path.is_file():
        try:
            metadata = {**metadata, **json.loads(sidecar_path.read_bytes())}
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BoundaryError(
                f"boundary sidecar {sidecar_path} is not valid JSON ({error})"
            ) from error
        semantic = metadata.get("semantic", semantic)
    return Boundary(
        name=name or semantic, normal=normal, metadata=metadata, space=_space(path, metadata, space)
    )


def load_boundaries(paths: list[Location | str]) -> list[Boundary]:
    """Boundaries from files, directories (every `*.npy`, sorted) and HiGAN boundary lists.

    Each entry may carry its space (`FILE:z`, `DIR:w`: every file of the directory). A `.txt`
    file is read as HiGAN's boundary list, which names each file's semantic and space.
    """
    entries: list[tuple[Location, str | None, str | None]] = []  # (file, space, semantic)
    for entry in paths:
        if isinstance(entry, StoreUrl):
            path, space = entry, None
        else:
            path, space = parse_boundary_argument(entry)
        if path.is_dir():
            entries.extend((f, space, None) for f in sorted(path.glob("*.npy")))
        elif path.suffix == ".txt":
            entries.extend(read_boundary_list(path))
        else:
            entries.append((path, space, None))
    if not entries:
        raise BoundaryError(
            f"no boundary .npy files found in {', '.join(map(str, paths))}; "
            f"run `rescore fit` first or pass boundary files"
        )
    boundaries = [load_boundary(f, space, name=name) for f, space, name in entries]
    names = [b.name for b in boundaries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BoundaryError(
            f"several boundary files name the semantic(s) {', '.join(duplicates)}; "
            f"pass each semantic once"
        )
    return boundaries


def read_boundary_list(path: Path) -> list[tuple[Path, str, str]]:
    """HiGAN's boundary list: lines `(name, space): path`; `DISABLE(...)` lines are skipped.

    Returns (file, space, semantic name) per line; relative paths are taken from the list's
    directory, else from the working directory (where HiGAN runs them).
    """
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("DISABLE", "#")):
            continue
        match = re.fullmatch(r"\(\s*([^,()]+?)\s*,\s*([A-Za-z]+)\s*\)\s*:\s*(.+)", line)
        if not match or match.group(2).lower() not in SPACES:
            raise BoundaryError(
                f"{path} line {number} reads {line!r}; a boundary list line is "
                f"'(name, z|w|wp): path' as in HiGAN"
            )
        name, space, file = match.group(1), match.group(2).lower(), Path(match.group(3).strip())
        if not file.is_absolute() and (path.parent / file).exists():
            file = path.parent / file
        entries.append((file, space, name))
    return entries


def _semantic_from_file_name(stem: str) -> str:
    """HiGAN's `<name>_boundary` and InterFaceGAN++'s `boundary_<name>` name `<name>`."""
    if stem.endswith("_boundary"):
        return stem.removesuffix("_boundary")
    if stem.startswith("boundary_") and len(stem) > len("boundary_"):
        return stem.removeprefix("boundary_")
    return stem


def _family_named_by_file(path: Path) -> str | None:
    """Generator family of a published file: InterFaceGAN's `<family>_<data>_...` file names,
    HiGAN's `<family>_<data>/` directories."""
    for name in (path.stem, path.parent.name):
        match = _FAMILY_PREFIX.match(name)
        if match:
            return match.group(1)
    return None


def _space_named_by_file(path: Path) -> str | None:
    """'z' when the file's name or directory marks Z space (InterFaceGAN, PGGAN, `*_z`)."""
    stem = path.stem
    if path.parent.name.endswith("_z") or stem.endswith("_z_boundary"):
        return "z"
    if _INTERFACEGAN_FILE.match(stem):
        return "w" if stem.endswith("_w_boundary") and not stem.startswith("pggan") else "z"
    return None


def _space(path: Path, metadata: dict[str, Any], given: str | None) -> str | None:
    """The boundary's space from the user's word, the sidecar and the file name; a file marked Z
    is never taken as W unless the user says so."""
    recorded = metadata.get("space")
    if recorded is not None and recorded not in SPACES:
        raise BoundaryError(
            f"{path.with_suffix('.json')} records space '{recorded}'; "
            f"expected one of {', '.join(SPACES)}"
        )
    if given and recorded and given != recorded:
        raise BoundaryError(
            f"{path} was fitted in {recorded.upper()} space (its sidecar says so) but is used as "
            f"{given.upper()}; drop ':{given}' or pass the file as {path}:{recorded}"
        )
    named = _space_named_by_file(path)
    if not given and not recorded and named == "z":
        raise BoundaryError(
            f"{path} is named like a Z-space boundary (InterFaceGAN/PGGAN naming) and would be "
            f"used as W; say its space: -b {path}:z (or :w if it really is W)"
        )
    return given or recorded


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


def _read_npy(path: Location) -> tuple[np.ndarray, dict[str, Any]]:
    """The boundary array and what HiGAN's pickled-dict variant carries beside it
    (`manipulate_layers` from its `meta_data`). The file is read whole (a boundary is small)."""
    data = path.read_bytes()
    magic = data[:6]
    if magic != b"\x93NUMPY":
        kind = "a .npz archive" if magic.startswith(b"PK") else "not a .npy file"
        raise BoundaryError(
            f"{path} is {kind}; a boundary is one array saved with np.save (HiGAN's layout)"
        )
    try:
        return np.load(io.BytesIO(data), allow_pickle=False), {}
    except ValueError:
        pass  # an object array (HiGAN's pickled-dict variant): read it with the safe unpickler
    except (OSError, EOFError) as error:
        raise BoundaryError(f"{path} is not a readable .npy file ({error})") from error
    try:
        handle = io.BytesIO(data)
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
    extra: dict[str, Any] = {}
    if isinstance(content, dict):
        meta_data = content.get("meta_data")
        if isinstance(meta_data, dict) and meta_data.get("manipulate_layers") is not None:
            extra["manipulate_layers"] = str(meta_data["manipulate_layers"])
        content = content.get("boundary")
    if not isinstance(content, np.ndarray) or content.dtype == object:
        raise BoundaryError(
            f"{path} has no 'boundary' array; expected HiGAN's {{'boundary': array}}"
        )
    return content, extra


def _check_values(array: np.ndarray, path: Path) -> np.ndarray:
    """Refuse arrays that are not real floating-point numbers, or not finite."""
    if array.dtype.kind != "f":
        raise BoundaryError(
            f"{path} holds a {array.dtype} array; a boundary is a float array (a unit normal); "
            f"pass the .npy that `rescore fit`, HiGAN or InterFaceGAN wrote"
        )
    if not np.all(np.isfinite(array)):
        raise BoundaryError(f"{path} contains NaN or inf values; refit the boundary")
    return array
