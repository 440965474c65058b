"""NVlabs network pickles (stylegan2-ada-pytorch, stylegan3), read without running anything.

NVlabs saves networks with `pickle.dump` of a dict such as ``{'G': ..., 'D': ..., 'G_ema': ...,
'training_set_kwargs': ...}``. Every network module is a "persistent class"
(`torch_utils/persistence.py`): it pickles as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type: 'class',
version, module_src: <the module's source code as text>, class_name, state: <the module's
__dict__>}``, which NVlabs' own loader `exec`s. Tensors inside come through torch's pickling:
``torch._utils._rebuild_tensor_v2(storage, ...)`` (parameters wrapped by `_rebuild_parameter`),
whose storages pickle as ``torch.storage._load_from_bytes(<a legacy torch.save of the storage>)``.
Attribute values add OrderedDicts, sets, `dnnlib.util.EasyDict`, NumPy scalars and arrays.

`read_network_pickle` admits exactly those records (an allow-list of globals, each replaced by a
function of ours that builds inert data: `PersistentRecord`s hold the class name and the source
*text*, never imported or executed; storages are read by ``torch.load(weights_only=True)``).
Anything else is refused with one line naming what was found. `load_generator` takes G_ema's
class, init kwargs and flattened state dict and builds rescore's own module for it
(`stylegan2.from_nvlabs` or `stylegan3.from_nvlabs`).
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError

_WHAT = "NVlabs network pickle"
_PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")
_SNIFF_BYTES = 1 << 16
# Leading positional arguments of NVlabs' Generator(...), in order (both repositories).
_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
# NumPy dtypes an attribute may hold (no object dtype: its payload would be further objects).
_NUMPY_KINDS = "biufc?"


class NvlabsPickleError(CheckpointError):
    """An NVlabs pickle holds something other than network records, or does not fit rescore."""


@dataclass(frozen=True)
class PersistentRecord:
    """One persistent object of an NVlabs pickle, as data: nothing of it was imported or run.

    class_name: the class in the original module (`Generator`, `SynthesisLayer`, ...).
    module_src: that module's source code, as text. state: the object's __dict__ (for a module:
    `_parameters`, `_buffers`, `_modules` of child records, `_init_kwargs`, plain attributes).
    """

    class_name: str
    module_src: str
    version: int
    state: dict

    @property
    def children(self) -> dict[str, Any]:
        """Child modules (`_modules`), name -> record (or None)."""
        return dict(self._mapping("_modules"))

    def init_kwargs(self) -> dict[str, Any]:
        """The constructor arguments recorded by the persistence decorator, as plain dicts."""
        kwargs = _plain(self._mapping("_init_kwargs"))
        args = self.state.get("_init_args") or ()
        if not isinstance(args, tuple | list):
            raise NvlabsPickleError(
                f"{_WHAT}: {self.class_name}._init_args is a {type(args).__name__}, not a tuple; "
                f"pass an unmodified network pickle"
            )
        for name, value in zip(_GENERATOR_ARGS, args, strict=False):
            kwargs.setdefault(name, _plain(value))
        return kwargs

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this module and its children, torch-style keys."""
        out: dict[str, torch.Tensor] = {}
        skipped = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, value in self._mapping(group).items():
                if value is None or (group == "_buffers" and name in skipped):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise NvlabsPickleError(
                        f"{_WHAT}: {prefix}{name} is a {type(value).__name__}, not a tensor; "
                        f"pass an unmodified network pickle"
                    )
                out[prefix + name] = value.detach()
        for name, child in self.children.items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise NvlabsPickleError(
                    f"{_WHAT}: submodule {prefix}{name} is a {type(child).__name__}, not a "
                    f"persistent network record; pass an unmodified network pickle"
                )
            out.update(child.state_dict(f"{prefix}{name}."))
        return out

    def _mapping(self, field: str) -> Mapping:
        value = self.state.get(field) or {}
        if not isinstance(value, Mapping):
            raise NvlabsPickleError(
                f"{_WHAT}: {self.class_name}.{field} is a {type(value).__name__}, not a dict; "
                f"pass an unmodified network pickle"
            )
        return value


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access): only its items count."""


def is_nvlabs_pickle(path: Path | str) -> bool:
    """Whether a file looks like an NVlabs network pickle (a pickle naming the persistence hook).

    Reads the first 64 KiB; never unpickles. torch.save zip files and plain state dicts are not.
    """
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    return head[:1] == b"\x80" and _PERSISTENCE[1].encode() in head


def read_network_pickle(path: Path | str) -> Any:
    """Unpickle an NVlabs network pickle with the allow-list; persistent objects become records.

    Raises `NvlabsPickleError` (one line) for any global outside the allow-list, for persistent
    ids, and for truncated or corrupt files.
    """
    path = Path(path)
    if not path.is_file():
        raise NvlabsPickleError(f"{_WHAT} not found: {path}; check the path you passed")
    with open(path, "rb") as handle:
        try:
            return _RestrictedUnpickler(handle, path).load()
        except NvlabsPickleError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            RuntimeError,
            OverflowError,
        ) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise NvlabsPickleError(
                f"{_WHAT} {path} is truncated, corrupt or not a network pickle "
                f"({type(error).__name__}: {reason}); pass the .pkl NVlabs' training wrote"
            ) from error


def generator_record(data: Any, path: Path | str) -> PersistentRecord:
    """The `G_ema` record of an unpickled network pickle."""
    if not isinstance(data, Mapping) or not isinstance(data.get("G_ema"), PersistentRecord):
        found = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
        raise NvlabsPickleError(
            f"{_WHAT} {path} has no G_ema network (found: {found}); pass a stylegan2-ada-pytorch "
            f"or stylegan3 network pickle (network-snapshot-*.pkl)"
        )
    return data["G_ema"]


def generator_family(record: PersistentRecord) -> str:
    """'stylegan2' (networks.py / networks_stylegan2.py) or 'stylegan3' (networks_stylegan3.py).

    Both repositories name the class `Generator`; their synthesis networks differ: StyleGAN3's
    starts with a `SynthesisInput` named `input`, StyleGAN2's with a `SynthesisBlock` named `b4`.
    """
    synthesis = record.children.get("synthesis")
    if record.class_name == "Generator" and isinstance(synthesis, PersistentRecord):
        kinds = {
            name: child.class_name
            for name, child in synthesis.children.items()
            if isinstance(child, PersistentRecord)
        }
        if kinds.get("input") == "SynthesisInput":
            return "stylegan3"
        if kinds.get("b4") == "SynthesisBlock":
            return "stylegan2"
    raise NvlabsPickleError(
        f"{_WHAT}: G_ema is a {record.class_name} that is neither NVlabs' StyleGAN2 nor "
        f"StyleGAN3 generator; rescore reads networks from stylegan2-ada-pytorch and stylegan3"
    )


def load_generator(path: Path | str, options: Any, *, expect: str | None = None) -> nn.Module:
    """Build rescore's generator for the G_ema of an NVlabs pickle.

    `expect` ('stylegan2' / 'stylegan3' / None) is the registry name the user chose; a pickle of
    the other family is refused naming the right one. `options` is a `GeneratorOptions`.
    """
    record = generator_record(read_network_pickle(path), path)
    family = generator_family(record)
    if expect is not None and family != expect:
        raise NvlabsPickleError(
            f"{path} holds a {family} generator, not {expect}; pass it as --generator {family}=PATH"
        )
    builder = _family_builder(family)
    return builder(record.init_kwargs(), record.state_dict(), options)


def _family_builder(family: str) -> Callable[..., nn.Module]:
    try:
        module = importlib.import_module(f"rescore.models.{family}")
    except ImportError as error:
        raise NvlabsPickleError(
            f"this rescore has no {family} generator module ({error}); install a rescore with "
            f"{family} support"
        ) from error
    builder = getattr(module, "from_nvlabs", None)
    if builder is None:
        raise NvlabsPickleError(
            f"rescore.models.{family} cannot build NVlabs networks (no from_nvlabs); "
            f"install a rescore with NVlabs {family} support"
        )
    return builder


# --- the allow-list -------------------------------------------------------------------------------


def _persistent_record(meta: Any) -> PersistentRecord:
    """`_reconstruct_persistent_obj(meta)`, as data: checks the fields, keeps the source as text."""
    if not isinstance(meta, Mapping) or meta.get("type") != "class":
        raise NvlabsPickleError(
            f"{_WHAT}: a persistence record of type {_describe_type(meta)} was found, expected "
            f"type 'class'; pass an unmodified network pickle"
        )
    fields = {k: meta.get(k) for k in ("class_name", "module_src", "version", "state")}
    if not (
        isinstance(fields["class_name"], str)
        and isinstance(fields["module_src"], str)
        and isinstance(fields["version"], int)
        and isinstance(fields["state"], Mapping)
    ):
        raise NvlabsPickleError(
            f"{_WHAT}: a persistence record lacks class_name/module_src/version/state "
            f"(found keys {sorted(map(str, meta))}); pass an unmodified network pickle"
        )
    return PersistentRecord(
        fields["class_name"], fields["module_src"], fields["version"], dict(fields["state"])
    )


def _describe_type(meta: Any) -> str:
    return repr(meta.get("type")) if isinstance(meta, Mapping) else type(meta).__name__


def _storage_from_bytes(data: Any) -> Any:
    """`torch.storage._load_from_bytes`: a legacy torch.save of one storage, read weights-only."""
    if not isinstance(data, bytes | bytearray):
        raise NvlabsPickleError(f"{_WHAT}: a storage record holds {type(data).__name__}, not bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        reason = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise NvlabsPickleError(
            f"{_WHAT}: a tensor storage was refused or corrupt ({reason}); "
            f"pass an unmodified network pickle"
        ) from error
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise NvlabsPickleError(
            f"{_WHAT}: a storage record holds a {type(storage).__name__}, not a tensor storage"
        )
    return storage


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2`, for storages our storage reader made."""
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise NvlabsPickleError(
            f"{_WHAT}: a tensor record is built on a {type(storage).__name__}, not a storage"
        )
    return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """`torch._utils._rebuild_parameter(_with_state)`: the tensor (gradient state is dropped)."""
    if not isinstance(data, torch.Tensor):
        raise NvlabsPickleError(f"{_WHAT}: a parameter record holds a {type(data).__name__}")
    return data


def _numpy_dtype(spec: Any, *_: Any) -> np.dtype:
    """`numpy.dtype(spec)` for plain numeric dtypes only."""
    dtype = np.dtype(spec) if isinstance(spec, str) else None
    if dtype is None or dtype.kind not in _NUMPY_KINDS:
        raise NvlabsPickleError(
            f"{_WHAT}: a NumPy value of dtype {spec!r} was found (numeric only)"
        )
    return dtype


def _numpy_scalar(dtype: Any, data: Any = b"") -> Any:
    """`numpy.core.multiarray.scalar(dtype, bytes)` for numeric dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS:
        raise NvlabsPickleError(f"{_WHAT}: a NumPy scalar of dtype {dtype!r} was found")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise NvlabsPickleError(f"{_WHAT}: a NumPy scalar has {len(data)} bytes for {dtype}")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_array(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    """`numpy.core.multiarray._reconstruct(ndarray, ...)`: an empty array that BUILD fills."""
    if cls is not np.ndarray:
        raise NvlabsPickleError(f"{_WHAT}: a NumPy array of class {cls!r} was found")
    return np.ndarray.__new__(np.ndarray, shape, dtype=np.uint8)


_ALLOWED: dict[tuple[str, str], Any] = {
    _PERSISTENCE: _persistent_record,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(m, "scalar"): _numpy_scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{
        (m, "_reconstruct"): _numpy_array
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from `_ALLOWED` (no import, ever)."""

    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise NvlabsPickleError(
                f"{_WHAT} {self._path} refers to {module}.{name}, which network pickles never "
                f"hold; refused without running anything (only NVlabs network records are read)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise NvlabsPickleError(
            f"{_WHAT} {self._path} holds a persistent id ({str(pid)[:40]}); network pickles "
            f"have none, refused (is it a torch.save file? pass it as a .pth)"
        )


def _plain(value: Any) -> Any:
    """Recursively turn EasyDicts/OrderedDicts into dicts and NumPy scalars into Python numbers."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value
