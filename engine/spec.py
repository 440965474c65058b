"""What a run is made of: the models it scores with and the backend it runs on.

A `ModelSpec` is recorded in every store twice: its *identity* (names, weight digests, options:
what determines the scores) and its *sources* (paths: where to find the weights again, so that
`rescore fit` / `rescore rescore` can rebuild the models from a samples store).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rescore.export.backends import BackendSpec, open_session
from rescore.export.session import ScoringSession
from rescore.models.errors import CheckpointError
from rescore.models.fused import predictor_ranges
from rescore.models.registry import (
    GeneratorOptions,
    ModelRef,
    build_generator,
    build_predictor,
)


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
        """Where the weights were found (to rebuild the models later)."""
        return {
            "generator": str(self.generator),
            "predictors": [str(p) for p in self.predictors],
            "generator_options": asdict(self.options),
        }

    @classmethod
    def from_sources(cls, sources: dict[str, Any]) -> ModelSpec:
        """Inverse of `sources()`."""
        return cls(
            generator=ModelRef.parse(sources["generator"]),
            predictors=tuple(ModelRef.parse(p) for p in sources["predictors"]),
            options=GeneratorOptions(**sources.get("generator_options", {})),
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


def open_model_session(spec: ModelSpec, backend: BackendSpec) -> ScoringSession:
    """Build the models of `spec` and open a scoring session on `backend`."""
    generator = build_generator(spec.generator, spec.options)
    predictors = [build_predictor(ref) for ref in spec.predictors]
    session = open_session(generator, predictors, backend)
    # every backend scores the same semantics: their declared ranges come from the predictors
    session.semantic_ranges = tuple(r for p in predictors for r in predictor_ranges(p))
    return session


def path_or_none(text: str | None) -> Path | None:
    return Path(text) if text else None
