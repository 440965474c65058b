"""Pick and open a scoring backend: ask for one and get it, or a clear error.

`auto` picks the fastest backend available here; an explicit name never falls back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rescore.models.base import Generator, Predictor
from rescore.models.errors import BackendUnavailableError

from .session import ScoringSession, TorchSession, resolve_device

BackendName = Literal["auto", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "torch")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """Which backend, device and precision a run asks for."""

    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"


def open_session(
    generator: Generator, predictors: Sequence[Predictor], spec: BackendSpec = BackendSpec()
) -> ScoringSession:
    """Open a scoring session for `generator` + `predictors` on the backend `spec` asks for."""
    if spec.backend not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend '{spec.backend}'; choose one of {', '.join(BACKENDS)}"
        )
    if spec.precision != "fp32":
        raise BackendUnavailableError(
            f"the torch backend runs fp32 only (asked for {spec.precision}); use --precision fp32"
        )
    device = resolve_device(spec.device)
    if spec.backend == "auto":
        log.info("backend auto -> torch on %s", device)
    return TorchSession(generator, predictors, device)
