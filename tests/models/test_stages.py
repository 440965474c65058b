"""Every layer-wise generator's `synthesis_stages()` is its synthesis, split honestly: resuming
from any stage's input gives `synthesize` bit for bit, and a stage reads only the codes it names
(moving layer l leaves every stage input up to l's first stage unchanged)."""

from __future__ import annotations

import pytest
import torch

from rescore.export.prefix import entry_stages, stage_inputs
from rescore.models.biggan import BigGANConfig, BigGANGenerator
from rescore.models.stages import run_stages
from rescore.models.stylegan import StyleGANGenerator
from rescore.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator, default_channels
from rescore.models.stylegan3 import StyleGAN3Config, random_stylegan3
from rescore.models.synthetic import build_synthetic


def _randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Unit-scale seeded parameters (biases small), so no stage is a near-identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("lod"):
                continue
            scale = 0.1 if "bias" in name or "noise" in name else 1.0
            tensor.copy_(scale * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def _stylegan2(architecture: str) -> StyleGAN2Generator:
    config = StyleGAN2Config(
        16, 8, 8, (8, 8), default_channels(16, 64, 8), architecture=architecture
    )
    return _randomized(StyleGAN2Generator(config), 2)


GENERATORS = {
    "stylegan": lambda: _randomized(
        StyleGANGenerator(16, z_space_dim=8, w_space_dim=8, fmaps_base=64, fmaps_max=8), 1
    ),
    "stylegan2-skip": lambda: _stylegan2("skip"),
    "stylegan2-resnet": lambda: _stylegan2("resnet"),
    "stylegan2-origin": lambda: _stylegan2("origin"),
    "stylegan3": lambda: random_stylegan3(
        StyleGAN3Config(
            z_dim=8,
            c_dim=0,
            w_dim=8,
            img_resolution=16,
            channel_base=64,
            channel_max=8,
            num_layers=3,
        ),
        seed=3,
    ),  # fmt: skip
    "biggan": lambda: _randomized(
        BigGANGenerator(
            BigGANConfig(
                output_dim=32,
                z_dim=8,
                class_embed_dim=8,
                channel_width=4,
                num_classes=5,
                layers=((False, 16, 16), (True, 16, 8), (True, 8, 4), (True, 4, 2), (True, 2, 1)),
                attention_layer_position=2,
            ),
            class_index=1,
        ),
        4,
    ),  # fmt: skip
    "synthetic": lambda: build_synthetic(resolution=32),
}


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def generator(request):
    return GENERATORS[request.param]()


def _codes(generator, seed: int = 0) -> torch.Tensor:
    shape = (3, generator.num_layers, getattr(generator, "w_dim", generator.z_dim))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_every_stage_resumes_to_the_same_images(generator):
    stages = generator.synthesis_stages()
    consumed = sorted(layer for stage in stages for layer in stage.layers)
    assert consumed == list(range(generator.num_layers))  # each code read by exactly one stage
    wp = _codes(generator)
    images = generator.synthesize(wp)
    assert images.shape[:2] == (3, 3) and images.abs().max() > 0
    for entry, state in enumerate(stage_inputs(stages, wp)):
        assert torch.equal(run_stages(stages, state, wp, entry), images), entry


@torch.no_grad()
def test_a_stage_reads_only_the_codes_it_names(generator):
    stages = generator.synthesis_stages()
    wp = _codes(generator)
    originals = stage_inputs(stages, wp)
    for layer in range(generator.num_layers):
        moved = wp.clone()
        moved[:, layer] += 1.5
        mask = torch.zeros(1, generator.num_layers, dtype=torch.bool)
        mask[0, layer] = True
        entry = int(entry_stages(stages, mask.numpy())[0])
        inputs = stage_inputs(stages, moved)
        for index in range(entry + 1):  # up to its entry stage, nothing has seen the move
            for a, b in zip(inputs[index], originals[index], strict=True):
                assert torch.equal(a, b), (layer, index)
        assert not torch.equal(
            run_stages(stages, inputs[entry], moved, entry), generator.synthesize(wp)
        ), layer
