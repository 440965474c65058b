"""Staged ONNX graphs for generator-prefix reuse on compiled backends (the ``staged`` part).

    prefix.onnx     wp [B, L, D] -> the input state of stages 1 .. S-1 (tensors x{e}_{i})
    suffix_{e}.onnx (x{e}_0, ..., wp) -> scores [B, S]: stages e.. and the fused predictors

Entry stage 0 needs no graph of its own (it is the fused graph). The prefix sidecar records
which code layers each stage consumes (`stage_layers`) and how many tensors each stage's input
state holds (`state_sizes`), so a session can pick entries and split the prefix outputs without
the generator. Built from the same `synthesis_stages()` as the torch path
(`rescore.export.prefix`); parity: tests/export/test_staged.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rescore.models.base import Generator, Predictor
from rescore.models.fused import ScoringPass
from rescore.models.stages import Stage, run_stages

from .onnx import ExportedGraph, ExportError, ExportSettings, _example_codes, export_graph
from .prefix import stage_inputs, synthesis_stages


class PrefixGraph(nn.Module):
    """wp [B, L, D] -> every tensor of the input states of stages 1 .. S-1, in stage order."""

    def __init__(self, generator: Generator, stages: Sequence[Stage]) -> None:
        super().__init__()
        self.generator = generator  # registered, so its weights travel with the graph
        self.stages = list(stages)

    def forward(self, wp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states = stage_inputs(self.stages, wp)[1:]
        return tuple(tensor for state in states for tensor in state)


class SuffixGraph(nn.Module):
    """(tensors of stage `entry`'s input state..., wp) -> scores [B, S]."""

    def __init__(self, scoring_pass: ScoringPass, stages: Sequence[Stage], entry: int) -> None:
        super().__init__()
        self.scoring_pass = scoring_pass
        self.stages = list(stages)
        self.entry = entry

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *state, wp = inputs
        images = run_stages(self.stages, tuple(state), wp, self.entry)  # [B, 3, H, W]
        return self.scoring_pass.score_images(images)


def export_staged(
    generator: Generator,
    predictors: Sequence[Predictor],
    directory: Path,
    *,
    settings: ExportSettings | None = None,
    meta: dict[str, Any] | None = None,
    only: str | None = None,
) -> list[ExportedGraph]:
    """Export prefix.onnx and suffix_{e}.onnx (e = 1 .. S-1) into `directory`, or only the one
    named `only` (``prefix``, ``suffix_<e>``: a cache exports what a run needs)."""
    settings = settings or ExportSettings()
    stages = synthesis_stages(generator)
    scoring_pass = ScoringPass(generator, predictors).eval()
    if stages is None or not scoring_pass.reads_images_only:
        raise ExportError(
            f"{type(generator).__name__} has no synthesis stages (or a predictor reads generator "
            f"features), so there is no prefix to reuse; drop the staged part"
        )
    example = _example_codes(generator)  # [2, L, D]
    with torch.no_grad():
        states = stage_inputs(stages, example)  # [()] + one state per later stage
    names = [[f"x{e}_{i}" for i in range(len(state))] for e, state in enumerate(states)]
    common = {
        **(meta or {}),
        "semantic_names": list(scoring_pass.semantic_names),
        "stage_layers": [list(stage.layers) for stage in stages],
        "state_sizes": [len(state) for state in states],
    }
    graphs = []
    if only in (None, "prefix"):
        graphs.append(
            export_graph(
                PrefixGraph(generator, stages),
                example,
                Path(directory) / "prefix.onnx",
                input_name="wp",
                output_name=[name for stage in names[1:] for name in stage],
                settings=settings,
                meta=common,
            )
        )
    for entry in range(1, len(stages)):
        if only not in (None, f"suffix_{entry}"):
            continue
        graphs.append(
            export_graph(
                SuffixGraph(scoring_pass, stages, entry),
                (*states[entry], example),
                Path(directory) / f"suffix_{entry}.onnx",
                input_name=[*names[entry], "wp"],
                output_name="scores",
                settings=settings,
                meta=common,
            )
        )
    if not graphs:
        raise ExportError(f"unknown staged graph '{only}'; choose prefix or suffix_1 .. "
                          f"suffix_{len(stages) - 1}")  # fmt: skip
    return graphs
