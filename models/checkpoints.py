"""Safe, strict loading of published checkpoint files.

Every checkpoint goes through `read_checkpoint` (``torch.load(..., weights_only=True)``: a file can
hold tensors, never code) and `load_strict` (every parameter present, nothing extra, every shape
right; the error lists what is wrong). `sha256_file` gives the digest recorded in run metadata.
"""

from __future__ import annotations

import fnmatch
import hashlib
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError

_MAX_LISTED = 8


def sha256_file(path: Path | str) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path | str, *, what: str) -> Any:
    """Load a torch checkpoint without executing pickled code.

    `what` names the file's role in messages ("StyleGAN generator checkpoint"). Raises
    `CheckpointError` for a missing, truncated or corrupt file and for a pickle that
    ``weights_only=True`` refuses.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path}; check the path you passed")
    if not path.is_file():
        raise CheckpointError(f"{what} is not a file: {path}; pass the checkpoint file itself")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe pickle"
        raise CheckpointError(
            f"{what} {path} holds objects that are not plain tensors and was refused "
            f"(weights_only=True: {first_line}); re-save it as a plain state dict "
            f"with torch.save(model.state_dict(), path)"
        ) from error
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else "unreadable"
        raise CheckpointError(
            f"{what} {path} is truncated or corrupt ({type(error).__name__}: {reason}); "
            f"download or copy it again"
        ) from error


def as_state_dict(obj: Any, *, path: Path | str, what: str, key: str | None = None) -> dict:
    """Return `obj` (or `obj[key]`) as a state dict of tensors, or raise `CheckpointError`."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = sorted(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(
                f"{what} {path} has no '{key}' entry (found: {found}); pass the published file"
            )
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(
            f"{what} {path} is not a state dict (got {type(obj).__name__}); "
            f"pass a file saved with torch.save(model.state_dict(), path)"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{what} {path} is not a state dict of tensors (non-tensor entries: "
            f"{_listing(not_tensors)}); pass the published checkpoint"
        )
    return dict(obj)


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    path: Path | str,
    what: str,
    keep: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> None:
    """Copy `state_dict` into `module` with strict=True semantics and a readable error.

    Names in `keep` keep the module's own value whether or not the file holds them (HiGAN does this
    for ``truncation.truncation``, which follows the user's truncation settings, not the file).
    Names matching a glob in `optional` may be absent from the file (published files that predate
    a buffer, e.g. BatchNorm's ``*.num_batches_tracked``); absent ones keep the module's value.
    """
    expected = module.state_dict()
    keep, optional = set(keep), tuple(optional)
    may_be_absent = [
        k for k in expected if k in keep or any(fnmatch.fnmatchcase(k, p) for p in optional)
    ]
    missing = [k for k in expected if k not in state_dict and k not in may_be_absent]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)}!={tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped {len(misshaped)} (file!=model): {_listing(misshaped)}")
    if problems:
        raise CheckpointError(
            f"{what} {path} does not fit the architecture ({'; '.join(problems)}); "
            f"check that the file and the model settings (resolution, channels) belong together"
        )
    merged = dict(state_dict)
    for name in may_be_absent:
        if name in keep or name not in merged:
            merged[name] = expected[name]
    module.load_state_dict(merged, strict=True)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


# Distinctive keys of the generator layouts rescore reads (the first family with one wins).
_FAMILY_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("biggan", ("generator.gen_z.weight_orig", "embeddings.weight")),
    ("stylegan2", ("synthesis.early_layer.const",)),
    ("stylegan", ("synthesis.layer0.const", "mapping.dense0.wscale.bias")),
    ("pggan", ("layer0.conv.weight",)),
)


def guess_family(state_dict: Mapping[str, Any]) -> str | None:
    """The generator family (registry name) a state dict's keys suggest, or None.

    For error messages that refuse a file of another family ("it looks like a stylegan
    checkpoint"): genforce StyleGAN v1 / StyleGAN2 / PGGAN and pytorch-pretrained-BigGAN layouts.
    """
    return next(
        (name for name, keys in _FAMILY_KEYS if any(key in state_dict for key in keys)), None
    )
