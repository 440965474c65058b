"""Staged ONNX graphs for generator-prefix reuse on compiled backends (the ``staged`` part).

    stage_{e}.onnx  (x{e}_0, ..., wp) -> x{e+1}_0, ...    stage e of synthesis alone (stage 0 takes
                                                           wp only; the last gives images)
    scorer.onnx     images [B, 3, H, W] -> scores [B, S]   the exact resize and every predictor

prefix(wp) chains stage_0 .. stage_{S-2}, keeping each state; suffix(e, state, wp) chains
stage_e .. stage_{S-1} and the scorer (`rescore.export.ort.OrtPrefixReuse`). Each weight is
exported once, so the graphs together weigh about one synthesis plus one set of predictors and
cost about one fused export. Every sidecar records which code layers each stage consumes
(`stage_layers`) and the semantic names, so a session reads them from whichever graph it opens
first, without the generator (each graph's input names give its state's tensors). Built from
the same `synthesis_stages()` as the torch path (`rescore.export.prefix`); parity:
tests/export/test_staged.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rescore.models.base import Generator, Predictor
from rescore.models.fused import ScoringPass
from rescore.models.stages import Stage

from .onnx import ExportedGraph, ExportError, ExportSettings, _example_codes, export_graph
from .prefix import stage_inputs, synthesis_stages


class StageGraph(nn.Module):
    """Stage `index` of synthesis: (tensors of its input state..., wp) -> its output state."""

    def __init__(self, generator: Generator, stages: Sequence[Stage], index: int) -> None:
        super().__init__()
        self.generator = generator  # registered, so the stage's weights travel with the graph
        self.stage = stages[index]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *state, wp = inputs
        return tuple(self.stage.run(tuple(state), wp))


class ScorerGraph(nn.Module):
    """images [B, 3, H, W] -> scores [B, S]: `ScoringPass.score_images` (resize + predictors)."""

    def __init__(self, scoring_pass: ScoringPass) -> None:
        super().__init__()
        self.scoring_pass = scoring_pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scoring_pass.score_images(images)


def staged_names(count: int) -> list[str]:
    """The staged part's graph names for `count` stages: stage_0 .. stage_{count-1}, scorer."""
    return [*(f"stage_{e}" for e in range(count)), "scorer"]


def export_staged(
    generator: Generator,
    predictors: Sequence[Predictor],
    directory: Path,
    *,
    settings: ExportSettings | None = None,
    meta: dict[str, Any] | None = None,
    only: str | None = None,
) -> list[ExportedGraph]:
    """Export stage_{e}.onnx (e = 0 .. S-1) and scorer.onnx into `directory`, or only the one
    named `only` (a cache rebuilds a single corrupt entry without the rest)."""
    settings = settings or ExportSettings()
    stages = synthesis_stages(generator)
    scoring_pass = ScoringPass(generator, predictors).eval()
    if stages is None or not scoring_pass.reads_images_only:
        raise ExportError(
            f"{type(generator).__name__} has no synthesis stages (or a predictor reads generator "
            f"features), so there is no prefix to reuse; drop the staged part"
        )
    names = staged_names(len(stages))
    if only not in (None, *names):
        raise ExportError(f"unknown staged graph '{only}'; choose from {', '.join(names)}")
    example = _example_codes(generator)  # [2, L, D]
    with torch.no_grad():
        states = stage_inputs(stages, example)  # [()] + the input of every later stage
        images = stages[-1].run(states[-1], example)[0]  # [2, 3, H, W]
    inputs = [[f"x{e}_{i}" for i in range(len(state))] for e, state in enumerate(states)]
    common = {
        **(meta or {}),
        "semantic_names": list(scoring_pass.semantic_names),
        "stage_layers": [list(stage.layers) for stage in stages],
    }
    graphs = []
    for index, name in enumerate(names):
        if only not in (None, name):
            continue
        module: nn.Module
        if name == "scorer":
            module, example_in = ScorerGraph(scoring_pass), images
            input_name, output_name = "images", "scores"
        else:
            module = StageGraph(generator, stages, index)
            example_in = (*states[index], example)
            input_name = [*inputs[index], "wp"]
            output_name = inputs[index + 1] if index + 1 < len(stages) else ["images"]
        graphs.append(
            export_graph(
                module,
                example_in,
                Path(directory) / f"{name}.onnx",
                input_name=input_name,
                output_name=output_name,
                settings=settings,
                meta=common,
            )
        )
    return graphs
