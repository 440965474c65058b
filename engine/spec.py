"""What a run is made of: the models it scores with and the backend it runs on.

A `ModelSpec` is recorded in every store twice: its *identity* (names, weight digests, options:
what determines the scores) and its *sources* (absolute paths: where to find the weights again, so
that `rescore rescore` / `rescore grid` can rebuild the models from a samples store).

A store is data, never code: only built-in registry names are rebuilt from its sources. A plug-in
(``package.module:factory``) recorded in a store is imported only when the user names it again on
the command line; the store's record (names, digests) is then checked against it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rescore.export.backends import BackendSpec, open_session
from rescore.export.session import ScoringSession
from rescore.models.errors import CheckpointError, RescoreError
from rescore.models.fused import predictor_ranges
from rescore.models.plugins import probe_models
from rescore.models.registry import (
    GENERATORS,
    PREDICTORS,
    GeneratorOptions,
    ModelRef,
    build_generator,
    build_predictor,
)

from .errors import StoreError


@dataclass(frozen=True)
class ModelSpec:
    """A generator, its options and the predictors that score its images."""

    generator: ModelRef
    predictors: tuple[ModelRef, ...]
    options: GeneratorOptions = field(default_factory=GeneratorOptions)

    def identity(self) -> dict[str, Any]:
        """Names, weight digests and options: what determines the scores."""
        return {
            "generator": {"name": self.generator.name, "sha256": self.generator.digest()},
            "generator_options": asdict(self.options),
            "predictors": [{"name": p.name, "sha256": p.digest()} for p in self.predictors],
        }

    def sources(self) -> dict[str, Any]:
        """Where the weights were found, as absolute paths (to rebuild the models later, also
        from another working directory)."""
        return {
            "generator": str(_absolute(self.generator)),
            "predictors": [str(_absolute(p)) for p in self.predictors],
            "generator_options": asdict(self.options),
        }

    @classmethod
    def from_sources(cls, sources: Any) -> ModelSpec:
        """Inverse of `sources()`; refuses malformed records with a `StoreError`."""
        if not isinstance(sources, dict):
            raise StoreError(_DAMAGED.format(what="its 'sources' record is missing"))
        generator, predictors = sources.get("generator"), sources.get("predictors")
        options = sources.get("generator_options", {})
        if (
            not isinstance(generator, str)
            or not isinstance(predictors, list)
            or not all(isinstance(p, str) for p in predictors)
            or not isinstance(options, dict)
        ):
            raise StoreError(_DAMAGED.format(what="its 'sources' record is malformed"))
        known = {f.name for f in fields(GeneratorOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise StoreError(
                _DAMAGED.format(what=f"its generator options hold unknown keys {unknown}")
            )
        return cls(
            generator=ModelRef.parse(generator),
            predictors=tuple(ModelRef.parse(p) for p in predictors),
            options=check_options(GeneratorOptions(**options)),
        )

    def check_digests(self, identity: dict[str, Any]) -> None:
        """Refuse weights that changed since `identity` was recorded."""
        now = self.identity()
        if now["generator"] != identity.get("generator") or now["predictors"] != identity.get(
            "predictors"
        ):
            raise CheckpointError(
                "the model weights differ from the ones the samples store was made with "
                "(SHA-256 changed); pass the original files with --generator/--predictor"
            )


_DAMAGED = (
    "the samples store cannot name its models: {what}; pass them with --generator/--predictor "
    "or remove the store and sample again"
)


@dataclass(frozen=True)
class SpecOverride:
    """What the user named again on the command line when models are rebuilt from a store:
    a generator, predictors, and generator options (only the fields given: the rest stay as the
    store recorded them)."""

    generator: ModelRef | None = None
    predictors: tuple[ModelRef, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def spec_from_store(sources: Any, override: SpecOverride | None = None) -> ModelSpec:
    """The models a samples store recorded, with the user's overrides applied.

    Built-in names are rebuilt from the record; a recorded plug-in must be named again in
    `override` (a store never makes rescore import a module). Options the user did not give keep
    the recorded values (model seed, truncation psi and layers).
    """
    recorded = ModelSpec.from_sources(sources)
    override = override or SpecOverride()
    if override.generator is None:
        _require_builtin(recorded.generator, GENERATORS, "generator", "--generator")
    if not override.predictors:
        for ref in recorded.predictors:
            _require_builtin(ref, PREDICTORS, "predictor", "--predictor")
    generator = override.generator or recorded.generator
    predictors = override.predictors or recorded.predictors
    options = check_options(replace(recorded.options, **override.options))
    return ModelSpec(generator, tuple(predictors), options)


def _require_builtin(ref: ModelRef, table: dict, kind: str, option: str) -> None:
    if ref.name not in table:
        raise RescoreError(
            f"the samples store records the plug-in {kind} '{ref.name}', and rescore never "
            f"imports a module because a file names it; name it again with {option} {ref}"
        )


def check_options(options: GeneratorOptions) -> GeneratorOptions:
    """Refuse generator options that are not finite numbers of the right kind."""
    psi = options.truncation_psi
    if psi is not None and (not isinstance(psi, int | float) or not math.isfinite(psi)):
        raise RescoreError(f"--truncation-psi must be a finite number, got {psi}")
    for name in ("truncation_layers", "resolution", "class_index", "seed"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RescoreError(f"generator option {name} must be an integer, got {value!r}")
    layers = options.truncation_layers
    if layers is not None and layers < 0:
        raise RescoreError(f"--truncation-layers must be >= 0, got {layers}")
    return options


def open_model_session(spec: ModelSpec, backend: BackendSpec) -> ScoringSession:
    """Build the models of `spec`, probe plug-ins on a tiny batch, and open a scoring session
    on `backend`."""
    generator = build_generator(spec.generator, spec.options)
    predictors = [build_predictor(ref) for ref in spec.predictors]
    probe_models(generator, predictors, spec.generator, spec.predictors)
    session = open_session(generator, predictors, backend)
    # every backend scores the same semantics: their declared ranges come from the predictors
    session.semantic_ranges = tuple(r for p in predictors for r in predictor_ranges(p))
    return session


def _absolute(ref: ModelRef) -> ModelRef:
    return ref if ref.path is None else ModelRef(ref.name, ref.path.resolve())


def path_or_none(text: str | None) -> Path | None:
    return Path(text) if text else None
