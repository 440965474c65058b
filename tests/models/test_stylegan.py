"""StyleGAN (v1) generator: published layout, numerics pinned by an independent NumPy model, loader.

The NumPy reference below is written from the genforce description (pixel norm, equalized-lr
scales, epilogue order, fused upscale kernel as the padded 4-tap sum, [1, 2, 1] blur), in float64,
with explicit loops for convolutions: it shares no code with rescore.models.stylegan.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rescore.models.base import Generator
from rescore.models.errors import CheckpointError, ShapeMismatchError
from rescore.models.stylegan import StyleGANGenerator, load_stylegan, save_random_stylegan

# The published-layout manifest (a copy of shared/formats/checkpoint-manifests.json).
MANIFEST = Path(__file__).resolve().parents[1] / "data" / "checkpoint-manifests.json"
TINY = dict(z_space_dim=6, w_space_dim=5, num_mapping_layers=3, fmaps_base=32, fmaps_max=8)


def _tiny(resolution: int, *, seed: int = 0, **settings) -> StyleGANGenerator:
    """A tiny StyleGAN (channels 8 at 4x4, 4 at 8x8, ...) with seeded random weights."""
    model = StyleGANGenerator(resolution, **{**TINY, **settings}).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name.endswith(("blur.kernel", "lod", "truncation.truncation")):
                continue
            values = torch.randn(tensor.shape, generator=generator)
            # Mapping files store values 1/lr_mul larger (the layer multiplies by lr_mul = 0.01).
            tensor.copy_(values * 100.0 if name.startswith("mapping.") else values)
    return model


def _codes(model: StyleGANGenerator, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_layers, model.w_dim, generator=generator)


@pytest.fixture(scope="module")
def random_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_stylegan(
        tmp_path_factory.mktemp("stylegan") / "sg8.pth", resolution=8, seed=0
    )


# ----------------------------------------------------------------------------------------------
# Published layout and geometry


@pytest.mark.parametrize(("resolution", "num_layers"), [(256, 14), (1024, 18)])
def test_state_dict_equals_published_manifest(resolution: int, num_layers: int) -> None:
    manifest = json.loads(MANIFEST.read_text())["checkpoints"][f"stylegan_{resolution}"]
    with torch.device("meta"):
        model = StyleGANGenerator(resolution)
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    # genforce's converter deletes its model_specific_vars before saving: the files lack them
    assert shapes.pop("truncation.truncation") == [1, num_layers, 1]
    assert shapes == manifest
    assert model.num_layers == num_layers
    assert isinstance(model, Generator)


def test_geometry_of_outputs() -> None:
    model = _tiny(16)
    z = torch.randn(3, 6)
    assert model.map(z).shape == (3, 5)
    assert model.truncation_coefficients().shape == (6,)
    assert model.average_w().shape == (5,)
    assert model.synthesize(_codes(model, 3)).shape == (3, 3, 16, 16)
    assert model(z).shape == (3, 3, 16, 16)


def test_full_size_forward_at_256() -> None:
    model = StyleGANGenerator(256).eval()
    with torch.no_grad():
        images = model(torch.randn(1, 512))
    assert images.shape == (1, 3, 256, 256)
    assert torch.isfinite(images).all()


def test_bad_input_shapes_raise_shape_mismatch() -> None:
    model = _tiny(8)
    with pytest.raises(ShapeMismatchError, match=r"expected \[batch, 6\]"):
        model.map(torch.zeros(2, 7))
    with pytest.raises(ShapeMismatchError, match=r"expected \[batch, 4, 5\]"):
        model.synthesize(torch.zeros(2, 6, 5))
    with pytest.raises(ShapeMismatchError):
        model.synthesize(torch.zeros(4, 5))


def test_unsupported_settings_list_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"300.*\[8, 16, 32, 64, 128, 256, 512, 1024\]"):
        StyleGANGenerator(300)
    with pytest.raises(ValueError, match=r"4 .*\[8, 16"):
        StyleGANGenerator(4)
    with pytest.raises(ValueError, match="fused_scale"):
        StyleGANGenerator(8, fused_scale="sometimes")


# ----------------------------------------------------------------------------------------------
# Numerics against an independent NumPy reference


def _np_dense(x, weight, bias, *, gain, lr_mul, lrelu):
    y = x @ (weight * gain / math.sqrt(weight.shape[1]) * lr_mul).T + bias * lr_mul
    return np.where(y >= 0, y, 0.2 * y) if lrelu else y


def _np_conv3x3(x, weight):
    """Cross-correlation, zero padding 1: x [B, I, H, W], weight [O, I, 3, 3]."""
    height, width = x.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], weight.shape[0], height, width))
    for a in range(3):
        for b in range(3):
            window = padded[:, :, a : a + height, b : b + width]
            out += np.einsum("bihw,oi->bohw", window, weight[:, :, a, b])
    return out


def _np_transposed_conv_x2(x, kernel):
    """Transposed conv, stride 2, padding 1, by scattering: x [B, I, H, W], kernel [4, 4, I, O]."""
    batch, _, height, width = x.shape
    out = np.zeros((batch, kernel.shape[3], 2 * height + 2, 2 * width + 2))
    for a in range(4):
        for b in range(4):
            contribution = np.einsum("bihw,io->bohw", x, kernel[a, b])
            out[:, :, a : a + 2 * height : 2, b : b + 2 * width : 2] += contribution
    return out[:, :, 1:-1, 1:-1]


def _np_blur(x):
    taps = np.array([1.0, 2.0, 1.0])
    kernel = np.outer(taps, taps) / 16.0
    height, width = x.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(
        kernel[a, b] * padded[:, :, a : a + height, b : b + width]
        for a in range(3)
        for b in range(3)
    )


def _np_epilogue(x, w, p, prefix):
    channels = x.shape[1]
    x = x + p[f"{prefix}.apply_noise.noise"] * p[f"{prefix}.apply_noise.weight"][:, None, None]
    x = x + p[f"{prefix}.bias"][:, None, None]
    x = np.where(x >= 0, x, 0.2 * x)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    x = x / np.sqrt((x**2).mean(axis=(2, 3), keepdims=True) + 1e-8)
    style = _np_dense(
        w,
        p[f"{prefix}.style_mod.dense.fc.weight"],
        p[f"{prefix}.style_mod.dense.wscale.bias"],
        gain=1.0,
        lr_mul=1.0,
        lrelu=False,
    )
    return x * (style[:, :channels, None, None] + 1) + style[:, channels:, None, None]


def _np_stylegan8(p, z, *, fused: bool):
    """The whole 8x8 generator: z [B, Z] -> images [B, 3, 8, 8], float64."""
    w = z / np.sqrt((z**2).mean(axis=1, keepdims=True) + 1e-8)
    for i in range(3):
        w = _np_dense(
            w,
            p[f"mapping.dense{i}.fc.weight"],
            p[f"mapping.dense{i}.wscale.bias"],
            gain=math.sqrt(2.0),
            lr_mul=0.01,
            lrelu=True,
        )
    w_avg, coefficients = p["truncation.w_avg"], p["truncation.truncation"].reshape(-1)
    wp = w_avg + (w[:, None, :] - w_avg) * coefficients[None, :, None]  # [B, 4, D]

    s = "synthesis"
    x = np.repeat(p[f"{s}.layer0.const"], z.shape[0], axis=0)
    x = _np_epilogue(x, wp[:, 0], p, f"{s}.layer0.epilogue")
    x = _np_conv3x3(x, p[f"{s}.layer1.conv.weight"] * math.sqrt(2.0) / math.sqrt(8 * 9))
    x = _np_epilogue(x, wp[:, 1], p, f"{s}.layer1.epilogue")
    scale = math.sqrt(2.0) / math.sqrt(8 * 9)
    if fused:
        padded = np.pad(p[f"{s}.layer2.weight"] * scale, ((1, 1), (1, 1), (0, 0), (0, 0)))
        kernel = padded[1:, 1:] + padded[:-1, 1:] + padded[1:, :-1] + padded[:-1, :-1]
        x = _np_transposed_conv_x2(x, kernel)
    else:
        x = _np_conv3x3(x.repeat(2, axis=2).repeat(2, axis=3), p[f"{s}.layer2.conv.weight"] * scale)
    x = _np_epilogue(_np_blur(x), wp[:, 2], p, f"{s}.layer2.epilogue")
    x = _np_conv3x3(x, p[f"{s}.layer3.conv.weight"] * math.sqrt(2.0) / math.sqrt(4 * 9))
    x = _np_epilogue(x, wp[:, 3], p, f"{s}.layer3.epilogue")
    rgb = p[f"{s}.output1.conv.weight"][:, :, 0, 0] / math.sqrt(4)
    return np.einsum("bchw,oc->bohw", x, rgb) + p[f"{s}.output1.bias"][:, None, None]


@pytest.mark.parametrize("fused", [False, True])
def test_matches_numpy_reference(fused: bool) -> None:
    model = _tiny(8, fused_scale=fused, truncation_psi=0.6, truncation_layers=3)
    params = {name: t.double().numpy() for name, t in model.state_dict().items()}
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        images = model(z).numpy()
    expected = _np_stylegan8(params, z.double().numpy(), fused=fused)
    assert np.abs(images - expected).max() <= 1e-4 * np.abs(expected).max()


def test_mapping_matches_numpy_reference() -> None:
    model = _tiny(8)
    params = {name: t.double().numpy() for name, t in model.state_dict().items()}
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    w = z.double().numpy()
    w = w / np.sqrt((w**2).mean(axis=1, keepdims=True) + 1e-8)
    for i in range(3):
        weight = params[f"mapping.dense{i}.fc.weight"]
        fan_in = weight.shape[1]
        y = w @ (weight * math.sqrt(2.0) / math.sqrt(fan_in) * 0.01).T
        y = y + params[f"mapping.dense{i}.wscale.bias"] * 0.01
        w = np.where(y >= 0, y, 0.2 * y)
    with torch.no_grad():
        np.testing.assert_allclose(model.map(z).numpy(), w, rtol=1e-4, atol=1e-6)


def test_fused_upscale_equals_upsample_then_flipped_conv() -> None:
    # conv_transpose2d is a true convolution, so nearest x2 + cross-correlation matches it with the
    # 3x3 kernel flipped: conv.weight[o, i, a, b] = weight[2 - a, 2 - b, i, o]. Summing the padded
    # kernel's 4 shifts is exactly what makes the two agree, border pixels included.
    fused = _tiny(16, fused_scale=True)
    plain = StyleGANGenerator(16, **TINY, fused_scale=False).eval()
    state = fused.state_dict()
    for layer in ("synthesis.layer2", "synthesis.layer4"):
        weight = state.pop(f"{layer}.weight")  # [3, 3, in, out]
        state[f"{layer}.conv.weight"] = weight.permute(3, 2, 0, 1).flip(2, 3)  # [out, in, 3, 3]
    plain.load_state_dict(state)
    wp = _codes(fused, 2)
    with torch.no_grad():
        expected = plain.synthesize(wp)
        torch.testing.assert_close(fused.synthesize(wp), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Level of detail


@pytest.mark.parametrize("lod", [1.0, 0.5])
def test_lod_upsamples_the_lower_resolution_image(lod: float) -> None:
    full = _tiny(16)
    state = full.state_dict()
    state["synthesis.lod"] = torch.tensor(lod)
    full.load_state_dict(state)
    assert full.synthesis.cached_lod == lod

    low = StyleGANGenerator(8, **TINY).eval()
    # Same weights for the 4x4 and 8x8 blocks; lod 0 and its own truncation buffer.
    own = ("synthesis.lod", "truncation.truncation")
    low.load_state_dict({k: v if k in own else state[k] for k, v in low.state_dict().items()})
    wp = _codes(full, 2)
    with torch.no_grad():
        image = full.synthesize(wp)
        expected = low.synthesize(wp[:, :4]).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(image, expected)


def test_lod_outside_range_is_refused() -> None:
    model = _tiny(16)
    state = model.state_dict()
    state["synthesis.lod"] = torch.tensor(3.0)
    with pytest.raises(CheckpointError, match="lod"):
        model.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# Random checkpoints and the loader


def test_random_checkpoint_round_trip(random_file: Path, tmp_path: Path) -> None:
    before = torch.random.get_rng_state()
    model = load_stylegan(random_file)
    assert torch.equal(torch.random.get_rng_state(), before)  # loading leaves the caller's RNG
    assert not model.training
    assert model.resolution == 8 and model.num_layers == 4
    saved = torch.load(random_file, weights_only=True)
    loaded = model.state_dict()
    for name, tensor in saved.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(loaded[name], tensor), name
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = model(z)
        assert torch.equal(load_stylegan(random_file)(z), images)
        assert torch.isfinite(images).all() and 0.1 < images.std() < 10

    again = save_random_stylegan(tmp_path / "again.pth", resolution=8, seed=0)
    other = save_random_stylegan(tmp_path / "other.pth", resolution=8, seed=1)
    same_seed = torch.load(again, weights_only=True)
    assert all(torch.equal(same_seed[k], saved[k]) for k in saved)
    assert not torch.equal(
        torch.load(other, weights_only=True)["synthesis.layer1.conv.weight"],
        saved["synthesis.layer1.conv.weight"],
    )


def test_truncation_follows_settings_not_file(random_file: Path, tmp_path: Path) -> None:
    state = torch.load(random_file, weights_only=True)
    state["truncation.truncation"] = torch.full((1, 4, 1), 0.123)
    path = tmp_path / "odd_truncation.pth"
    torch.save(state, path)

    model = load_stylegan(path, truncation_psi=0.5, truncation_layers=2)
    assert model.truncation_coefficients().tolist() == [0.5, 0.5, 1.0, 1.0]
    assert load_stylegan(path).truncation_coefficients().tolist() == pytest.approx([0.7] * 4)
    assert load_stylegan(path, truncation_psi=1.0).truncation_coefficients().tolist() == [1.0] * 4
    assert load_stylegan(path, truncation_layers=0).truncation_coefficients().tolist() == [1.0] * 4

    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w = model.map(z)
        w_avg = state["truncation.w_avg"]
        wp = torch.stack([w_avg + (w - w_avg) * c for c in (0.5, 0.5, 1.0, 1.0)], dim=1)
        torch.testing.assert_close(model(z), model.synthesize(wp))


def _genforce_converted(model: StyleGANGenerator, path: Path) -> Path:
    """Save `model` exactly as genforce/HiGAN's converter does (`convert_tf_weights`): the net's
    state dict with its `model_specific_vars` deleted, then `torch.save(state_dict, path)`."""
    state_dict = model.state_dict()
    for var_name in ["truncation.truncation"]:  # StyleGANGenerator.model_specific_vars
        del state_dict[var_name]
    torch.save(state_dict, path)
    return path


@pytest.mark.parametrize("resolution", [8, 16])
def test_loads_genforce_converted_file_without_truncation_buffer(
    resolution: int, tmp_path: Path
) -> None:
    source = StyleGANGenerator(resolution).eval()
    path = _genforce_converted(source, tmp_path / f"stylegan_tiny{resolution}_generator.pth")
    assert "truncation.truncation" not in torch.load(path, weights_only=True)

    model = load_stylegan(path, truncation_psi=0.5, truncation_layers=2)
    assert model.resolution == resolution and model.num_layers == source.num_layers
    coefficients = [0.5, 0.5] + [1.0] * (source.num_layers - 2)
    assert model.truncation_coefficients().tolist() == coefficients
    for name, tensor in source.state_dict().items():
        if name != "truncation.truncation":
            assert torch.equal(model.state_dict()[name], tensor), name


def test_random_files_are_written_as_genforce_writes_them(random_file: Path) -> None:
    assert "truncation.truncation" not in torch.load(random_file, weights_only=True)


def test_truncation_buffer_that_disagrees_with_the_weights_is_refused(
    random_file: Path, tmp_path: Path
) -> None:
    path = _rewritten(
        random_file,
        tmp_path / "inconsistent.pth",
        lambda s: s.update({"truncation.truncation": torch.ones(1, 14, 1)}),
    )
    with pytest.raises(
        CheckpointError, match=r"truncation\.truncation of shape \(1, 14, 1\).*4 layers"
    ):
        load_stylegan(path)


class _Payload:
    """A custom class: its pickle must be refused by weights_only loading."""


def _rewritten(random_file: Path, path: Path, edit) -> Path:
    state = torch.load(random_file, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def test_loader_errors(random_file: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_stylegan(tmp_path / "missing.pth")

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(random_file.read_bytes()[: random_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_stylegan(truncated)

    pickled = tmp_path / "pickled.pth"
    torch.save({"synthesis.layer0.const": _Payload()}, pickled)
    with pytest.raises(CheckpointError, match="refused"):
        load_stylegan(pickled)

    not_stylegan = tmp_path / "pggan.pth"
    torch.save(
        {"lod": torch.zeros(()), "layer0.conv.weight": torch.zeros(4, 4, 3, 3)}, not_stylegan
    )
    with pytest.raises(CheckpointError, match=r"not a StyleGAN \(v1\)"):
        load_stylegan(not_stylegan)


@pytest.mark.parametrize(
    ("edit", "listed"),
    [
        (lambda s: s.pop("synthesis.layer3.epilogue.bias"), r"missing 1: synthesis\.layer3\."),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected 1: extra"),
        (
            lambda s: s.update({"synthesis.output1.bias": torch.zeros(4)}),
            r"mis-shaped 1 .*synthesis\.output1\.bias \(4,\)!=\(3,\)",
        ),
        (
            lambda s: s.update({"synthesis.layer4.epilogue.bias": torch.zeros(4)}),
            "5 synthesis layers.*supported resolution",
        ),
    ],
)
def test_mismatched_keys_are_listed(random_file: Path, tmp_path: Path, edit, listed: str) -> None:
    path = _rewritten(random_file, tmp_path / "edited.pth", edit)
    with pytest.raises(CheckpointError, match=listed):
        load_stylegan(path)


def test_images_depend_on_every_layer_code() -> None:
    model = _tiny(16)
    wp = _codes(model, 1)
    with torch.no_grad():
        base = model.synthesize(wp)
        for layer in range(model.num_layers):
            moved = wp.clone()
            moved[:, layer] += 1.0
            assert not torch.allclose(model.synthesize(moved), base), layer
