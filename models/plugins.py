"""Check user plug-in models once, on a tiny batch, before a run trusts them with its stores.

A plug-in (``package.module:factory``) is user code: its factory may return the wrong thing and
its forward may raise or return the wrong shape. Finding that out at the first batch of a long
run, as a traceback, helps no one; `probe_models` runs two codes through the generator and every
predictor and turns any failure into one `PluginError` naming the plug-in and what it did.
Built-in models are not probed (their tests do that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Generator, Predictor
from .errors import RescoreError

PROBE_BATCH = 2


class PluginError(RescoreError):
    """A user plug-in model failed to build or to run on a test batch."""


def is_plugin(name: str) -> bool:
    """Whether a model name is a user plug-in (``package.module:factory``)."""
    return ":" in name


def probe_models(
    generator: Generator,
    predictors: Sequence[Predictor],
    generator_ref: object,
    predictor_refs: Sequence[object],
) -> None:
    """Run a batch of `PROBE_BATCH` codes through plug-ins; raise `PluginError` on failure.

    Checks: map z [B, Z] -> w [B, D]; synthesize wp [B, L, D] -> images [B, 3, H, W]; each
    plug-in predictor images -> scores [B, len(semantic_names)].
    """
    plugins = [is_plugin(getattr(r, "name", str(r))) for r in predictor_refs]
    generator_plugin = is_plugin(getattr(generator_ref, "name", str(generator_ref)))
    if not generator_plugin and not any(plugins):
        return
    with torch.no_grad():
        images = _probe_generator(generator, generator_ref, strict=generator_plugin)
        for predictor, ref, plugin in zip(predictors, predictor_refs, plugins, strict=True):
            if plugin:
                _probe_predictor(predictor, ref, images)


def _device(module: torch.nn.Module) -> torch.device:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _probe_generator(generator: Generator, ref: object, *, strict: bool) -> torch.Tensor:
    """images [B, 3, H, W] from the generator; checked when it is a plug-in."""
    fix = "fix its map/synthesize (see rescore.models.base.Generator)"
    try:
        z_dim, w_dim = int(generator.z_dim), int(generator.w_dim)
        num_layers = int(generator.num_layers)
        z = torch.randn(PROBE_BATCH, z_dim, generator=torch.Generator().manual_seed(0))
        w = generator.map(z.to(_device(generator)))
        _expect(w, (PROBE_BATCH, w_dim), f"generator '{ref}' map(z)", fix)
        images = generator.synthesize(w[:, None].expand(-1, num_layers, -1).contiguous())
    except PluginError:
        raise
    except Exception as error:  # user code: any failure is the plug-in's
        raise PluginError(
            f"generator '{ref}' failed on a test batch of {PROBE_BATCH} codes "
            f"({type(error).__name__}: {_first_line(error)}); {fix}"
        ) from error
    if strict:
        _expect(images, None, f"generator '{ref}' synthesize(wp)", fix, ndim=4)
        if images.shape[0] != PROBE_BATCH or images.shape[1] != 3:
            raise PluginError(
                f"generator '{ref}' synthesize(wp) returned shape {tuple(images.shape)}, "
                f"expected [{PROBE_BATCH}, 3, H, W]; {fix}"
            )
    return images


def _probe_predictor(predictor: Predictor, ref: object, images: torch.Tensor) -> None:
    names = tuple(getattr(predictor, "semantic_names", ()))
    fix = "fix its forward (see rescore.models.base.Predictor)"
    if not names or not all(isinstance(n, str) for n in names):
        raise PluginError(
            f"predictor '{ref}' has no semantic_names (a sequence of strings); set them"
        )
    try:
        scores = predictor(images)
    except Exception as error:  # user code: any failure is the plug-in's
        raise PluginError(
            f"predictor '{ref}' failed on a test batch of {PROBE_BATCH} images "
            f"({type(error).__name__}: {_first_line(error)}); {fix}"
        ) from error
    _expect(scores, (PROBE_BATCH, len(names)), f"predictor '{ref}' forward(images)", fix)


def _expect(
    value: object, shape: tuple[int, ...] | None, what: str, fix: str, *, ndim: int | None = None
) -> None:
    if not isinstance(value, torch.Tensor):
        raise PluginError(f"{what} returned {type(value).__name__}, not a torch.Tensor; {fix}")
    if shape is not None and tuple(value.shape) != shape:
        raise PluginError(
            f"{what} returned shape {tuple(value.shape)}, expected {list(shape)}; {fix}"
        )
    if ndim is not None and value.ndim != ndim:
        raise PluginError(f"{what} returned {value.ndim} dimensions, expected {ndim}; {fix}")
    if not value.is_floating_point():
        raise PluginError(f"{what} returned dtype {value.dtype}, expected floats; {fix}")


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text if len(text) <= 160 else text[:157] + "..."
