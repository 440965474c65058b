"""Generator-prefix reuse for layer-wise re-scoring: compute what a manipulation leaves alone once.

Moving the code of layer l changes nothing that synthesis computes before the stage consuming
layer l. Synthesis is split into stages; for a chunk of latents every stage's input is computed
once from the original codes, and each (boundary, layer set) branches from the input of the first
stage its moved layers reach:

    stages  = synthesis_stages(generator)       # [Stage(layers, run)], in order; None: unsplit
    scores  = score_layer_sets_staged(pass, stages, wp, directions, layer_sets, distance, batch)

The codes are built exactly as `rescore.kernels.manipulate` builds them, so the scores equal
today's manipulate + score path up to float reordering of batched kernels (parity test:
`tests/export/test_prefix.py`). A generator splits itself by offering ``synthesis_stages()``
(a list of `Stage`); StyleGAN v1 is split here, one stage per layer, from its synthesis modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from rescore.models.fused import ScoringPass


@dataclass(frozen=True)
class Stage:
    """One piece of synthesis: consumes the codes of `layers`; run(x, wp) -> next x.

    The first stage gets x = None (it starts from the generator's constant or its input code);
    the last returns the images [B, 3, H, W].
    """

    layers: tuple[int, ...]
    run: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]


def synthesis_stages(generator: torch.nn.Module) -> list[Stage] | None:
    """The generator's synthesis as stages, or None when it cannot be split."""
    own = getattr(generator, "synthesis_stages", None)
    if callable(own):
        return list(own())
    from rescore.models.stylegan import StyleGANGenerator

    if type(generator) is StyleGANGenerator:
        return _stylegan_stages(generator)
    return None


def _stylegan_stages(generator) -> list[Stage]:
    """StyleGAN v1: layer 2b is block b's first layer, 2b+1 its second; ToRGB (and the lod
    upsampling, the final tanh) last. Mirrors `SynthesisNetwork.forward`; a test binds them."""
    synthesis = generator.synthesis
    blocks = synthesis._blocks_run
    first, second = synthesis._first, synthesis._second

    stages = [Stage((0,), lambda x, wp: first[0](wp[:, 0]))]
    for block in range(blocks):
        if block > 0:
            stages.append(Stage((2 * block,), lambda x, wp, b=block: first[b](x, wp[:, 2 * b])))
        stages.append(
            Stage((2 * block + 1,), lambda x, wp, b=block: second[b](x, wp[:, 2 * b + 1]))
        )

    def to_image(x: torch.Tensor | None, wp: torch.Tensor) -> torch.Tensor:
        image = synthesis._to_rgb[blocks - 1](x)  # [B, 3, R, R]
        for _ in range(blocks, synthesis.num_blocks):
            image = torch.nn.functional.interpolate(image, scale_factor=2.0, mode="nearest")
        return torch.tanh(image) if synthesis.final_tanh else image

    stages.append(Stage((), to_image))
    return stages


def entry_stages(stages: Sequence[Stage], layer_sets: np.ndarray) -> np.ndarray:
    """For each layer set [K, L], the first stage consuming a moved layer (len(stages) - 1 when
    none is consumed: only the final stage reruns)."""
    entries = []
    for moved in np.asarray(layer_sets, bool):
        hit = [i for i, stage in enumerate(stages) if any(moved[list(stage.layers)])]
        entries.append(hit[0] if hit else len(stages) - 1)
    return np.array(entries, dtype=np.int64)


def run_stages(
    stages: Sequence[Stage], x: torch.Tensor | None, wp: torch.Tensor, start: int = 0
) -> torch.Tensor:
    """Run stages[start:] from input x (None at stage 0): -> images [B, 3, H, W]."""
    for stage in stages[start:]:
        x = stage.run(x, wp)
    return x


@torch.inference_mode()
def score_layer_sets_staged(
    scoring_pass: ScoringPass,
    stages: Sequence[Stage],
    wp: np.ndarray,
    directions: np.ndarray,
    layer_sets: np.ndarray,
    distance: float,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Scores [M, K, n, S] of wp [n, L, D] moved by distance * directions [M, L, D] on each layer
    set [K, L], branching every (boundary, set) from the last stage it leaves untouched."""
    layer_sets = np.asarray(layer_sets, bool)
    steps = torch.from_numpy(
        (np.asarray(directions, np.float32) * np.float32(distance)).astype(np.float32)
    ).to(device)  # [M, L, D]
    masks = torch.from_numpy(layer_sets).to(device)[:, :, None]  # [K, L, 1]
    entries = entry_stages(stages, layer_sets)
    num_dirs, num_sets, count = len(steps), len(layer_sets), len(wp)
    out: np.ndarray | None = None
    chunk = max(1, batch_size)
    for start in range(0, count, chunk):
        codes = torch.from_numpy(np.ascontiguousarray(wp[start : start + chunk], np.float32))
        codes = codes.to(device)  # [c, L, D]
        inputs: list[torch.Tensor | None] = [None]  # input of each stage, from the originals
        x = None
        for stage in stages[:-1]:
            x = stage.run(x, codes)
            inputs.append(x)
        for entry in np.unique(entries):
            jobs = [(m, k) for m in range(num_dirs) for k in np.flatnonzero(entries == entry)]
            # [J, c, L, D]: wp + step where the set moves a layer, exactly as `manipulate` adds
            moved = torch.stack(
                [codes + torch.where(masks[k], steps[m], 0.0) for m, k in jobs]
            ).flatten(0, 1)  # [J * c, L, D]
            prefix = inputs[entry]
            scores = []
            for lo in range(0, len(moved), batch_size):
                piece = moved[lo : lo + batch_size]
                x = None
                if prefix is not None:
                    rows = torch.arange(lo, lo + len(piece), device=device) % len(codes)
                    x = prefix[rows]
                images = run_stages(stages, x, piece, entry)
                scores.append(
                    torch.cat([p(images).float() for p in scoring_pass.predictors], dim=1)
                )
            result = torch.cat(scores).view(len(jobs), len(codes), -1).cpu().numpy()
            if out is None:
                out = np.empty((num_dirs, num_sets, count, result.shape[-1]), np.float32)
            for j, (m, k) in enumerate(jobs):
                out[m, k, start : start + len(codes)] = result[j]
    return out


def stage_flops(stages: Sequence[Stage], wp: torch.Tensor) -> list[float]:
    """FLOPs of each stage for one code wp [1, L, D] (torch's counter, 2 per multiply-add)."""
    flops, x = [], None
    with torch.no_grad():
        for stage in stages:
            counter = FlopCounterMode(display=False)
            with counter:
                x = stage.run(x, wp)
            flops.append(float(counter.get_total_flops()))
    return flops
