"""Helpers shared by the export tests: the parity measure and a tiny seeded StyleGAN."""

from __future__ import annotations

import numpy as np
import torch

from rescore.models.stylegan import StyleGANGenerator

PARITY_RTOL = 1e-4  # fp32 backends vs torch eager (see `relative_error`)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the norm-wise (infinity norm) relative error.

    Norm-wise rather than element-wise: a float32 reordering may move a generator pixel across a
    uint8 level that a predictor quantizes to, which shifts near-zero scores by tiny absolute
    amounts that an element-wise measure would blow up.
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def tiny_stylegan(seed: int = 0) -> StyleGANGenerator:
    """A 16px StyleGAN v1 (6 layers, 16-dim codes) with seeded, unit-scale random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StyleGANGenerator(
            16,
            z_space_dim=16,
            w_space_dim=16,
            num_mapping_layers=2,
            fmaps_base=128,
            fmaps_max=16,
            truncation_psi=0.7,
            truncation_layers=2,
        )
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if name.endswith("bias") or name.endswith("apply_noise.weight"):
                    tensor.copy_(0.1 * torch.randn_like(tensor))
                elif name != "synthesis.lod":
                    tensor.copy_(torch.randn_like(tensor))
            model.truncation.w_avg.copy_(torch.randn_like(model.truncation.w_avg))
    return model.eval()
