"""Synthesis as a chain of stages, so work a layer-wise manipulation leaves alone can be reused.

A generator with layer-wise codes offers ``synthesis_stages()``: stages in order, each naming
the code layers it consumes. Its synthesis forward *is* `run_stages` over them (one code path, so
a stage chain equals synthesis bit for bit). Moving the codes of layer l changes nothing before
the first stage consuming l; `rescore.export.prefix` reuses the states up to there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

State = tuple[torch.Tensor, ...]  # what one stage hands the next (empty before stage 0)


@dataclass(frozen=True)
class Stage:
    """One piece of synthesis: consumes the codes of `layers`; run(state, wp) -> next state.

    The first stage gets the empty state () (it starts from the generator's constant or its
    input code); the last returns (images [B, 3, H, W],).
    """

    layers: tuple[int, ...]
    run: Callable[[State, torch.Tensor], State]


def run_stages(
    stages: Sequence[Stage], state: State, wp: torch.Tensor, start: int = 0
) -> torch.Tensor:
    """Run stages[start:] from `state` (() at stage 0) with codes wp [B, L, D] -> images."""
    for stage in stages[start:]:
        state = stage.run(state, wp)
    return state[0]
