"""One place that lists the generators and predictors rescore knows, by name.

A model is named by a `ModelRef`: a registry name (``stylegan``, ``places365``, ...) or a user's
``package.module:factory`` path, plus an optional file or directory (``stylegan=/w/g.pth``).
Users plug in their own models without editing rescore:

    generator factory:  factory(path: Path | None, options: GeneratorOptions) -> nn.Module
    predictor factory:  factory(path: Path | None) -> nn.Module

The returned modules follow the `Generator` / `Predictor` protocols of `rescore.models.base`.
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .base import Generator, Predictor
from .checkpoints import sha256_file
from .errors import RescoreError, UnknownNameError


@dataclass(frozen=True)
class ModelRef:
    """A model name (registry name or ``package.module:factory``) and its weights path, if any."""

    name: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``NAME`` or ``NAME=PATH``."""
        name, sep, path = text.partition("=")
        name = name.strip()
        if not name:
            raise UnknownNameError(f"empty model name in '{text}'; write NAME or NAME=PATH")
        return cls(name, Path(path).expanduser() if sep and path else None)

    def __str__(self) -> str:
        return self.name if self.path is None else f"{self.name}={self.path}"

    def digest(self) -> str | None:
        """SHA-256 of the weights file (or of the sorted file digests of a weights directory)."""
        if self.path is None or not self.path.exists():
            return None
        if self.path.is_file():
            return sha256_file(self.path)
        files = sorted(p for p in self.path.iterdir() if p.is_file())
        listing = {p.name: sha256_file(p) for p in files}
        import hashlib

        return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class GeneratorOptions:
    """Settings a generator factory may use; `None` means the model's own default."""

    truncation_psi: float | None = None
    truncation_layers: int | None = None
    resolution: int | None = None  # for random-initialised models without a checkpoint
    seed: int = 0  # for models built from a seed (synthetic, random init)
    class_index: int | None = None  # class of a conditional generator (BigGAN, NVlabs c_dim > 0)


GeneratorFactory = Callable[[Path | None, GeneratorOptions], nn.Module]
PredictorFactory = Callable[[Path | None], nn.Module]


def _stylegan(path: Path | None, options: GeneratorOptions) -> nn.Module:
    from . import stylegan

    psi = 0.7 if options.truncation_psi is None else options.truncation_psi
    layers = 8 if options.truncation_layers is None else options.truncation_layers
    if path is None:
        raise RescoreError(
            "the stylegan generator needs its checkpoint; pass --generator "
            "stylegan=/path/to/stylegan_bedroom256_generator.pth"
        )
    return stylegan.load_stylegan(path, truncation_psi=psi, truncation_layers=layers)


def _synthetic(path: Path | None, options: GeneratorOptions) -> nn.Module:
    from . import synthetic

    kwargs: dict = {"seed": options.seed}
    if options.truncation_psi is not None:
        kwargs["truncation_psi"] = options.truncation_psi
    if options.truncation_layers is not None:
        kwargs["truncation_layers"] = options.truncation_layers
    if options.resolution is not None:
        kwargs["resolution"] = options.resolution
    if path is not None:
        raise RescoreError("the synthetic generator has no checkpoint; pass --generator synthetic")
    return synthetic.build_synthetic(**kwargs)


def _pggan(path: Path | None, options: GeneratorOptions) -> nn.Module:
    from . import pggan

    if path is None:
        raise RescoreError(
            "the pggan generator needs its checkpoint; pass --generator "
            "pggan=/path/to/pggan_bedroom256_generator.pth"
        )
    return pggan.load_pggan(path)


def _biggan(path: Path | None, options: GeneratorOptions) -> nn.Module:
    from . import biggan

    if path is None:
        raise RescoreError(
            "the biggan generator needs its checkpoint; pass --generator biggan=/path/to/dir "
            "(the directory holding pytorch_model.bin and config.json)"
        )
    return biggan.load_biggan(
        path, class_index=options.class_index, truncation_psi=options.truncation_psi
    )


def _places365(path: Path | None) -> nn.Module:
    from . import places365

    if path is None:
        raise RescoreError(
            "the places365 predictor needs the directory holding wideresnet18_places365.pth.tar, "
            "W_sceneattribute_wideresnet18.npy, categories_places365.txt and "
            "labels_sunattribute.txt; pass --predictor places365=/path/to/dir"
        )
    return places365.load_places365(path)


def _color(path: Path | None) -> nn.Module:
    from . import color

    if path is not None:
        raise RescoreError("the color predictor has no weights; pass --predictor color")
    return color.ColorPredictor()


def _synthetic_predictor(path: Path | None) -> nn.Module:
    from . import synthetic

    if path is not None:
        raise RescoreError("the synthetic predictor has no weights; pass --predictor synthetic")
    return synthetic.build_synthetic_predictor()


def _lineargan(path: Path | None) -> nn.Module:
    from . import lineargan

    if path is None:
        raise RescoreError(
            "the lineargan predictor needs the LSE file `rescore lineargan` wrote; pass "
            "--predictor lineargan=DIR/lineargan/lse.npz"
        )
    return lineargan.load_lse(path)


# --- StyleGAN2 / StyleGAN3: genforce .pth or NVlabs .pkl (recognised by content) ---------------


def _stylegan2(path: Path | None, options: GeneratorOptions) -> nn.Module:
    from . import nvlabs_pickle, stylegan2

    if path is None:
        raise RescoreError(
            "the stylegan2 generator needs its checkpoint; pass --generator "
            "stylegan2=/path/to/stylegan2_church256_generator.pth (genforce) or "
            "stylegan2=/path/to/network-snapshot.pkl (NVlabs)"
        )
    if path.is_file() and nvlabs_pickle.is_nvlabs_pickle(path):
        return nvlabs_pickle.load_generator(path, options, expect="stylegan2")
    state_dict = _generator_state_dict(path, "StyleGAN2 generator checkpoint")
    if not stylegan2.is_genforce_stylegan2(state_dict):
        raise _wrong_family(path, state_dict, "stylegan2", "stylegan2_church256_generator.pth")
    psi, layers = options.truncation_psi, options.truncation_layers
    return stylegan2.load_stylegan2(
        path,
        truncation_psi=stylegan2.DEFAULT_TRUNCATION_PSI if psi is None else psi,
        truncation_layers=stylegan2.DEFAULT_TRUNCATION_LAYERS if layers is None else layers,
    )


def _stylegan3(path: Path | None, options: GeneratorOptions) -> nn.Module:
    from . import nvlabs_pickle

    if path is None:
        raise RescoreError(
            "the stylegan3 generator needs its network pickle; pass --generator "
            "stylegan3=/path/to/stylegan3-t-ffhq-1024x1024.pkl"
        )
    if path.is_file() and nvlabs_pickle.is_nvlabs_pickle(path):
        return nvlabs_pickle.load_generator(path, options, expect="stylegan3")
    state_dict = _generator_state_dict(path, "StyleGAN3 network pickle")
    raise _wrong_family(path, state_dict, "stylegan3", "an NVlabs stylegan3 .pkl")


def _generator_state_dict(path: Path, what: str) -> dict:
    from .checkpoints import as_state_dict, read_checkpoint

    return as_state_dict(read_checkpoint(path, what=what), path=path, what=what)


def _wrong_family(path: Path, state_dict: dict, expected: str, example: str) -> RescoreError:
    from .checkpoints import guess_family

    family = guess_family(state_dict)
    if family is None:
        return RescoreError(
            f"{path} is not a {expected} generator checkpoint (none of the keys rescore knows); "
            f"pass {example}"
        )
    return RescoreError(
        f"{path} looks like a {family} generator checkpoint, not {expected}; "
        f"pass it as --generator {family}=PATH"
    )


GENERATORS: dict[str, GeneratorFactory] = {
    "stylegan": _stylegan,
    "synthetic": _synthetic,
    # PGGAN and BigGAN (issue 9)
    "pggan": _pggan,
    "biggan": _biggan,
    "stylegan2": _stylegan2,
    "stylegan3": _stylegan3,
}

PREDICTORS: dict[str, PredictorFactory] = {
    "places365": _places365,
    "color": _color,
    "synthetic": _synthetic_predictor,
    "lineargan": _lineargan,
}


def build_generator(ref: ModelRef, options: GeneratorOptions = GeneratorOptions()) -> Generator:
    """Build the generator `ref` names, in eval mode, and check it follows the protocol."""
    factory = _resolve(ref.name, GENERATORS, kind="generator")
    model = _call_factory(factory, ref, "generator", ref.path, options)
    _check_protocol(model, Generator, ref, ("map", "synthesize", "truncation_coefficients"))
    return model.eval()


def build_predictor(ref: ModelRef) -> Predictor:
    """Build the predictor `ref` names, in eval mode, and check it follows the protocol."""
    factory = _resolve(ref.name, PREDICTORS, kind="predictor")
    model = _call_factory(factory, ref, "predictor", ref.path)
    _check_protocol(model, Predictor, ref, ("semantic_names",))
    return model.eval()


def _call_factory(factory: Callable, ref: ModelRef, kind: str, *args: object) -> nn.Module:
    """Call a factory; a plug-in's own exceptions become one `RescoreError` naming it."""
    if ref.name in GENERATORS or ref.name in PREDICTORS:
        return factory(*args)  # built-ins raise RescoreErrors themselves
    try:
        return factory(*args)
    except RescoreError:
        raise
    except Exception as error:  # user code: any failure is the plug-in's
        text = (str(error).strip().splitlines() or [""])[0][:160]
        raise RescoreError(
            f"the {kind} factory '{ref.name}' raised {type(error).__name__} ({text}); fix the "
            f"factory (it is called as factory(path{', options' if kind == 'generator' else ''}))"
        ) from error


def _resolve(name: str, table: dict, *, kind: str) -> Callable:
    if name in table:
        return table[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # ImportError, or the module itself failing on import
            raise UnknownNameError(
                f"cannot import module '{module_name}' for {kind} '{name}' ({error}); "
                f"check that the package is installed and the path is package.module:factory"
            ) from error
        factory = getattr(module, attribute, None)
        if not callable(factory):
            raise UnknownNameError(
                f"module '{module_name}' has no callable '{attribute}'; "
                f"write the {kind} as package.module:factory"
            )
        return factory
    close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownNameError(
        f"unknown {kind} '{name}'; {hint}known: {', '.join(sorted(table))} "
        f"(or give package.module:factory)"
    )


def _check_protocol(model: object, protocol: type, ref: ModelRef, needed: tuple) -> None:
    if not isinstance(model, nn.Module):
        raise RescoreError(
            f"'{ref.name}' returned {type(model).__name__}, not a torch.nn.Module following the "
            f"{protocol.__name__} protocol; make the factory return the model (see "
            f"rescore.models.base)"
        )
    missing = [attr for attr in needed if not hasattr(model, attr)]
    if missing:
        raise RescoreError(
            f"'{ref.name}' did not build a torch.nn.Module following the {protocol.__name__} "
            f"protocol (missing: {', '.join(missing)}); see rescore.models.base"
        )
