"""`rescore condition`: a primal boundary made orthogonal to any number of condition boundaries.

Moving along the result changes the primal semantic while leaving the (linear) condition
semantics unchanged: HiGAN's / InterFaceGAN's conditional manipulation, without their limit of two
conditions. The result is a boundary file like any other (same shape as the primal), whose sidecar
records what it was conditioned on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rescore.kernels.condition import DegenerateConditionError, condition

from .boundary import (
    Boundary,
    boundary_stem,
    load_boundary,
    parse_boundary_argument,
    save_boundary,
)
from .errors import BoundaryError


def condition_boundary(primal_path: Path, condition_paths: list[Path], out_dir: Path) -> Path:
    """Write `out_dir/<primal>.npy` (+ .json): the primal orthogonalized against the conditions."""
    primal_path, primal_space = parse_boundary_argument(primal_path)
    primal = load_boundary(primal_path, primal_space)
    conditions = [load_boundary(*parse_boundary_argument(p)) for p in condition_paths]
    if not conditions:
        raise BoundaryError("no condition given; pass --on CONDITION.npy (repeatable)")
    for other in conditions:
        if other.normal.shape != primal.normal.shape or other.space != primal.space:
            raise BoundaryError(
                f"condition '{other.name}' has shape {other.normal.shape} in {other.space.upper()} "
                f"but the primal '{primal.name}' has {primal.normal.shape} in "
                f"{primal.space.upper()}; condition boundaries of one space"
            )
    stacked = np.concatenate([c.normal for c in conditions])  # [C, D] or [C, L, D]
    try:
        normal = condition(primal.normal, stacked)
    except DegenerateConditionError as error:
        raise BoundaryError(
            f"'{primal.name}' lies in the span of the conditions ({error}); drop a condition"
        ) from error
    if Path(out_dir).resolve() == Path(primal_path).parent.resolve():
        raise BoundaryError(
            f"writing the conditioned '{primal.name}' next to the primal would replace it; "
            f"choose another --output directory"
        )
    metadata = {
        "family": primal.family,
        "conditioned_on": [c.name for c in conditions],
        "primal": {"path": str(primal_path), "metadata": primal.metadata},
        # mean over layers of the per-layer cosine (one layer for W boundaries)
        "cosine_to_primal": float(
            np.mean(np.sum(normal.astype(np.float64) * primal.normal, axis=-1))
        ),
    }
    return save_boundary(Path(out_dir), Boundary(primal.name, normal, metadata, space=primal.space))


def default_output(primal_path: Path, condition_paths: list[Path]) -> Path:
    """`<primal dir>/conditioned/<primal>__on__<c1>+<c2>/`: one directory per conditioning."""
    names = "+".join(boundary_stem(Path(p).stem.removesuffix("_boundary")) for p in condition_paths)
    primal = boundary_stem(Path(primal_path).stem.removesuffix("_boundary"))
    return Path(primal_path).parent / "conditioned" / f"{primal}__on__{names}"
