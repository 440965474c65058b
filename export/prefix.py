"""Generator-prefix reuse for layer-wise re-scoring: compute what a manipulation leaves alone once.

Moving the code of layer l changes nothing that synthesis computes before the stage consuming
layer l. Synthesis is split into stages (each generator offers ``synthesis_stages()`` beside its
forward); for every micro-batch of the grid the input of every stage is computed once from the
original codes, and each layer set branches from the input of the first stage its moved layers
reach (its *entry* stage):

    reuse  = session.prefix_reuse()                    # a `PrefixReuse`, or None: no stages
    states = reuse.prefix(wp)                          # input of every stage, from the originals
    scores = reuse.suffix(entry, states[entry], moved) # stages entry.. and the predictors

`score_layer_sets_on_grid` does this per micro-batch of B latents, every layer set on the same B
rows, so each score stays a pure function of its micro-batch (engine stores stay bit-identical
whatever the chunking). The moved codes are built by `rescore.kernels.manipulate`, exactly as the
reference path (`score_codes` of the manipulated codes) builds them; sets entering at stage 0 are
scored by `session.score` itself. Parity: `tests/export/test_prefix.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from rescore.kernels.manipulate import manipulate
from rescore.models.fused import ScoringPass
from rescore.models.stages import Stage, State, run_stages


class PrefixReuse(Protocol):
    """What a session offers for prefix reuse (states are opaque: device tensors, host arrays)."""

    def entries(self, layer_sets: np.ndarray) -> np.ndarray:
        """Entry stage of each layer set [K, L] -> [K] int."""
        ...

    def prefix(self, wp: np.ndarray) -> list[Any]:
        """Original codes wp [B, L, D] -> the input state of every stage (index = stage)."""
        ...

    def suffix(self, entry: int, state: Any, wp: np.ndarray) -> np.ndarray:
        """Stages entry.. from `state` with codes wp [B, L, D], then predictors: scores [B, S]."""
        ...


def synthesis_stages(generator: torch.nn.Module) -> list[Stage] | None:
    """The generator's synthesis as stages (its ``synthesis_stages()``), or None."""
    own = getattr(generator, "synthesis_stages", None)
    return list(own()) if callable(own) else None


def entry_stages(stages: Sequence[Stage], layer_sets: np.ndarray) -> np.ndarray:
    """For each layer set [K, L], the first stage consuming a moved layer (len(stages) - 1 when
    none is consumed: only the final stage reruns)."""
    return entries_of([stage.layers for stage in stages], layer_sets)


def entries_of(stage_layers: Sequence[Sequence[int]], layer_sets: np.ndarray) -> np.ndarray:
    """`entry_stages` from the layers each stage consumes (what a staged graph records)."""
    entries = []
    for moved in np.asarray(layer_sets, bool):
        hit = [i for i, layers in enumerate(stage_layers) if any(moved[list(layers)])]
        entries.append(hit[0] if hit else len(stage_layers) - 1)
    return np.array(entries, dtype=np.int64)


def stage_inputs(stages: Sequence[Stage], wp: torch.Tensor) -> list[State]:
    """The input state of every stage for codes wp [B, L, D] (index 0: ())."""
    states: list[State] = [()]
    for stage in stages[:-1]:
        states.append(stage.run(states[-1], wp))
    return states


def score_layer_sets_on_grid(
    session: Any,
    reuse: PrefixReuse,
    wp: np.ndarray,
    direction: np.ndarray,
    layer_sets: np.ndarray,
    distance: float,
    batch_size: int,
) -> np.ndarray:
    """Scores [n, K, S] of wp [n, L, D] moved by distance * direction [L, D] on each layer set
    [K, L], micro-batch by micro-batch (samples [b*B, (b+1)*B)): the prefix of the B originals
    once, then every set from its entry stage on the same B rows."""
    layer_sets = np.asarray(layer_sets, bool)
    entries = reuse.entries(layer_sets)
    wp = np.ascontiguousarray(wp, np.float32)
    moved = manipulate(wp, np.asarray(direction, np.float32)[None], layer_sets, distance)[0]
    columns = []  # moved: [K, n, L, D], elementwise, so slicing it is the grid's codes
    for lo in range(0, len(wp), batch_size):
        rows = slice(lo, lo + batch_size)
        states = reuse.prefix(wp[rows]) if entries.max() > 0 else None
        columns.append(
            np.stack(
                [
                    session.score(moved[k, rows])
                    if entry == 0
                    else reuse.suffix(int(entry), states[entry], moved[k, rows])
                    for k, entry in enumerate(entries)
                ],
                axis=1,
            )
        )  # [B, K, S]
    return np.concatenate(columns, axis=0)


class TorchPrefixReuse:
    """Prefix reuse on torch eager: stage states stay on the session's device."""

    def __init__(
        self, stages: Sequence[Stage], scoring_pass: ScoringPass, device: torch.device
    ) -> None:
        self.stages = list(stages)
        self.scoring_pass = scoring_pass
        self.device = device

    def entries(self, layer_sets: np.ndarray) -> np.ndarray:
        return entry_stages(self.stages, layer_sets)

    @torch.inference_mode()
    def prefix(self, wp: np.ndarray) -> list[State]:
        return stage_inputs(self.stages, self._codes(wp))

    @torch.inference_mode()
    def suffix(self, entry: int, state: State, wp: np.ndarray) -> np.ndarray:
        images = run_stages(self.stages, state, self._codes(wp), entry)  # [B, 3, H, W]
        return self.scoring_pass.score_images(images).cpu().numpy()

    def _codes(self, wp: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(wp, np.float32)).to(self.device)


def torch_prefix_reuse(
    generator: torch.nn.Module, scoring_pass: ScoringPass, device: torch.device
) -> TorchPrefixReuse | None:
    """Prefix reuse for a torch pass, or None (no stages, or predictors reading features)."""
    stages = synthesis_stages(generator)
    if stages is None or not scoring_pass.reads_images_only:
        return None
    return TorchPrefixReuse(stages, scoring_pass, device)


def stage_flops(stages: Sequence[Stage], wp: torch.Tensor) -> list[float]:
    """FLOPs of each stage for one code wp [1, L, D] (torch's counter, 2 per multiply-add)."""
    flops, state = [], ()
    with torch.no_grad():
        for stage in stages:
            counter = FlopCounterMode(display=False)
            with counter:
                state = stage.run(state, wp)
            flops.append(float(counter.get_total_flops()))
    return flops
