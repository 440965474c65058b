"""StyleGAN3 (configs T and R): parity with NVlabs' code, truncation, classes, shapes, ONNX export.

The fixtures in tests/data/fixtures/stylegan3/ were computed by NVlabs' own
`networks_stylegan3.Generator` (impl='ref' ops, CPU, float32) on the seeded random weights stored
beside them; see the README there for the recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import nvlabs_builder
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from rescore.engine.cli import app
from rescore.models.base import Generator, truncate
from rescore.models.errors import CheckpointError, RescoreError, ShapeMismatchError
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator
from rescore.models.stylegan3 import (
    StyleGAN3Config,
    StyleGAN3Generator,
    config_from_init_kwargs,
    filtered_lrelu,
    from_nvlabs,
    modulated_conv2d,
    nvlabs_init_kwargs,
    random_stylegan3,
    upfirdn2d,
    upsample_separable,
)

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "stylegan3"
PARITY_RTOL = 1e-4


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (norm-wise, as tests/export measures parity)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _fixture(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["init_kwargs"] = json.loads(str(arrays["init_kwargs"]))
    arrays["state_dict"] = {
        key.removeprefix("state/"): torch.from_numpy(value)
        for key, value in arrays.items()
        if key.startswith("state/")
    }
    index = int(arrays["class_index"])
    arrays["class_index"] = None if index < 0 else index
    return arrays


@pytest.fixture(scope="module", params=["stylegan3_t", "stylegan3_r"])
def reference(request) -> dict:
    return _fixture(request.param)


def _load(reference: dict, **options) -> StyleGAN3Generator:
    options.setdefault("class_index", reference["class_index"])
    return from_nvlabs(
        reference["init_kwargs"], reference["state_dict"], GeneratorOptions(**options)
    )


# ----------------------------------------------------------------------------------------------
# Parity with NVlabs


def test_mapping_and_synthesis_match_nvlabs(reference: dict) -> None:
    model = _load(reference)
    assert isinstance(model, Generator)
    z = torch.from_numpy(reference["z"])
    with torch.no_grad():
        wp = truncate(model.map(z), model.average_w(), model.truncation_coefficients())
        images = model.synthesize(torch.from_numpy(reference["ws"]))
        from_z = model(z)
    assert _relative_error(wp.numpy(), reference["ws"]) < PARITY_RTOL
    assert images.shape == reference["images"].shape
    assert _relative_error(images.numpy(), reference["images"]) < PARITY_RTOL
    assert _relative_error(from_z.numpy(), reference["images"]) < PARITY_RTOL


def test_truncation_matches_nvlabs_psi_and_cutoff(reference: dict) -> None:
    psi, cutoff = float(reference["truncation_psi"]), int(reference["truncation_cutoff"])
    model = _load(reference, truncation_psi=psi, truncation_layers=cutoff)
    expected = [psi] * cutoff + [1.0] * (model.num_layers - cutoff)
    assert model.truncation_coefficients().tolist() == pytest.approx(expected)
    with torch.no_grad():
        w = model.map(torch.from_numpy(reference["z"]))
        wp = truncate(w, model.average_w(), model.truncation_coefficients())
        images = model.synthesize(wp)
    assert _relative_error(wp.numpy(), reference["ws_trunc"]) < PARITY_RTOL
    assert _relative_error(images.numpy(), reference["images_trunc"]) < PARITY_RTOL


def test_default_truncation_is_nvlabs_gen_images_psi_1_and_psi_alone_truncates_every_code(
    reference: dict,
) -> None:
    assert _load(reference).truncation_coefficients().tolist() == [1.0] * 8
    assert _load(reference, truncation_psi=0.7).truncation_coefficients().tolist() == (
        pytest.approx([0.7] * 8)
    )
    w_avg = reference["state_dict"]["mapping.w_avg"]
    assert torch.equal(_load(reference).average_w(), w_avg)


def test_designed_filters_equal_nvlabs_filters(reference: dict) -> None:
    config = config_from_init_kwargs(reference["init_kwargs"])
    fresh = StyleGAN3Generator(config, class_index=reference["class_index"]).state_dict()
    filters = [key for key in reference["state_dict"] if key.endswith("_filter")]
    assert filters and sorted(filters) == sorted(k for k in fresh if k.endswith("_filter"))
    for key in filters:
        torch.testing.assert_close(fresh[key], reference["state_dict"][key], rtol=0, atol=1e-7)
    radial = [key for key in filters if reference["state_dict"][key].ndim == 2]
    assert bool(radial) == config.use_radial_filters


# ----------------------------------------------------------------------------------------------
# Reference ops bound to their fast forms


def test_strided_downsampling_equals_filtering_then_dropping_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 13, 13, generator=generator)
    for f in (torch.rand(6, generator=generator), torch.rand(6, 6, generator=generator)):
        dense = upfirdn2d(x, f, padding=(1, 2, 2, 1))
        torch.testing.assert_close(
            upfirdn2d(x, f, down=2, padding=(1, 2, 2, 1)), dense[..., ::2, ::2]
        )


@pytest.mark.parametrize("up", [2, 4])
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (11, 10, 11, 10), (-3, 2, 5, -4), (20, 5, 9, 1)])
def test_polyphase_upsampling_equals_zero_insertion_then_filtering(up: int, padding) -> None:
    generator = torch.Generator().manual_seed(up)
    x = torch.randn(2, 3, 9, 7, generator=generator)
    f = torch.rand(6 * up, generator=generator) / up
    expected = upfirdn2d(x, f, up=up, padding=padding, gain=up**2)
    actual = upsample_separable(x, f, up=up, padding=padding, gain=up**2)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [5, 16])
@pytest.mark.parametrize("radial", [False, True])
def test_filtered_lrelu_equals_the_reference_ops_in_sequence(channels: int, radial: bool) -> None:
    # filtered_lrelu pads the channels to a multiple of 16 and takes the polyphase upsampling
    generator = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 9, 8, generator=generator)
    bias = torch.randn(channels, generator=generator)
    fu = torch.rand(12, generator=generator) / 2
    fd = torch.rand(*([12, 12] if radial else [12]), generator=generator) / 12
    padding = (11, 10, 9, 12)
    expected = upfirdn2d(x + bias.view(1, -1, 1, 1), fu, up=2, padding=padding, gain=4)
    expected = upfirdn2d((F.leaky_relu(expected, 0.2) * 1.5).clamp(-1, 1), fd, down=2)
    actual = filtered_lrelu(
        x, fu, fd, bias, up=2, down=2, padding=padding, gain=1.5, slope=0.2, clamp=1.0
    )
    assert actual.shape == (2, channels, 9, 8)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_modulated_conv_equals_the_per_sample_weight_form() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, 9, 9, generator=generator)
    weight = torch.randn(4, 5, 3, 3, generator=generator)
    styles = torch.randn(1, 5, generator=generator)
    gain = torch.tensor(0.7)
    # NVlabs' form (a batch of one, so its batch-wide style normalization is per sample)
    w = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
    s = styles * styles.square().mean().rsqrt()
    w = w[None] * s[:, None, :, None, None]
    w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[..., None, None, None] * gain
    expected = F.conv2d(x, w[0], padding=2)
    actual = modulated_conv2d(x, weight, styles, demodulate=True, padding=2, input_gain=gain)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_images_do_not_depend_on_the_rest_of_the_batch() -> None:
    reference = _fixture("stylegan3_t")
    model = _load(reference)
    ws = torch.from_numpy(reference["ws"])
    with torch.no_grad():
        torch.testing.assert_close(model.synthesize(ws[1:2]), model.synthesize(ws)[1:2])


# ----------------------------------------------------------------------------------------------
# Geometry, classes and bad input


def test_geometry_and_layer_code_weights() -> None:
    reference = _fixture("stylegan3_r")
    model = _load(reference)
    state = reference["state_dict"]
    assert (model.family, model.layer_wise) == ("stylegan3", True)
    assert (model.z_dim, model.w_dim, model.num_layers, model.resolution) == (8, 8, 8, 32)
    weights = model.layer_code_weights()
    assert len(weights) == model.num_layers
    assert weights[0] is model.synthesis.input.affine.weight and weights[0].shape == (4, 8)
    affines = [k for k in state if k.startswith("synthesis.L") and k.endswith("affine.weight")]
    for weight, key in zip(weights[1:], affines, strict=True):
        assert torch.equal(weight, state[key])  # [in_channels, D], raw as stored
    with pytest.raises(ShapeMismatchError, match="8, 8"):
        model.synthesize(torch.zeros(2, 7, 8))
    with pytest.raises(ShapeMismatchError, match="z_dim=8"):
        model.map(torch.zeros(2, 9))


def test_the_class_steers_a_conditional_model_and_must_be_given() -> None:
    reference = _fixture("stylegan3_r")
    z = torch.from_numpy(reference["z"])
    with torch.no_grad():
        assert not torch.allclose(_load(reference, class_index=0).map(z), _load(reference).map(z))
    with pytest.raises(RescoreError, match="--class-index N"):
        _load(reference, class_index=None)
    with pytest.raises(RescoreError, match="outside the model's 4 classes"):
        _load(reference, class_index=4)
    with pytest.raises(RescoreError, match="unconditional"):
        _load(_fixture("stylegan3_t"), class_index=0)


def test_init_kwargs_are_read_flat_or_nested_and_unknown_names_refused() -> None:
    flat = _fixture("stylegan3_t")["init_kwargs"]
    synthesis = {k: flat[k] for k in ("channel_base", "channel_max", "num_layers")}
    nested = {k: v for k, v in flat.items() if k not in synthesis} | {"synthesis_kwargs": synthesis}
    assert config_from_init_kwargs(nested) == config_from_init_kwargs(flat)
    assert config_from_init_kwargs(flat).num_ws == 8
    config_r = StyleGAN3Config(z_dim=4, c_dim=2, w_dim=4, img_resolution=16).preset("r")
    assert config_from_init_kwargs(nvlabs_init_kwargs(config_r)) == config_r
    assert (config_r.conv_kernel, config_r.use_radial_filters, config_r.channel_base) == (
        1,
        True,
        65536,
    )
    with pytest.raises(CheckpointError, match="unknown: \\['architecture'\\]"):
        config_from_init_kwargs({**flat, "architecture": "skip"})
    with pytest.raises(CheckpointError, match="mapping_kwargs.embed_features"):
        config_from_init_kwargs({**flat, "mapping_kwargs": {"embed_features": 8}})
    with pytest.raises(CheckpointError, match="missing: \\['w_dim'\\]"):
        config_from_init_kwargs({k: v for k, v in flat.items() if k != "w_dim"})


def test_a_state_dict_that_does_not_fit_is_refused_with_the_keys() -> None:
    reference = _fixture("stylegan3_t")
    state = dict(reference["state_dict"])
    state.pop("synthesis.input.freqs")
    with pytest.raises(CheckpointError, match="synthesis.input.freqs"):
        from_nvlabs(reference["init_kwargs"], state, GeneratorOptions())


def test_registry_asks_for_the_pickle() -> None:
    with pytest.raises(RescoreError, match="stylegan3=/path/to/"):
        build_generator(ModelRef.parse("stylegan3"))


def _network_pickle(reference: dict, path: Path) -> Path:
    """The fixture's weights as an NVlabs stylegan3 network pickle (G_ema), written by the
    test-side writer in NVlabs' persistence layout (class names of networks_stylegan3.py)."""
    record = nvlabs_builder.generator_record(reference["state_dict"], reference["init_kwargs"])
    synthesis = record.meta["state"]["_modules"]["synthesis"]
    assert synthesis.meta["state"]["_modules"]["input"].meta["class_name"] == "SynthesisInput"
    path.write_bytes(nvlabs_builder.dumps({"G": record, "D": None, "G_ema": record}))
    return path


def test_nvlabs_stylegan3_pickles_build_through_the_registry(tmp_path: Path) -> None:
    for name in ("stylegan3_t", "stylegan3_r"):
        reference = _fixture(name)
        path = _network_pickle(reference, tmp_path / f"{name}.pkl")
        options = GeneratorOptions(class_index=reference["class_index"])
        model = build_generator(ModelRef("stylegan3", path), options)
        assert isinstance(model, StyleGAN3Generator)
        with torch.no_grad():
            images = model.synthesize(torch.from_numpy(reference["ws"]))
        assert _relative_error(images.numpy(), reference["images"]) < PARITY_RTOL


@pytest.mark.parametrize("name", ["stylegan3_t", "stylegan3_r"])
def test_rescore_run_end_to_end_on_a_network_pickle(name: str, tmp_path: Path) -> None:
    """`rescore run` with tiny N/K on a config T / config R `.pkl` (R is conditional: class 1).
    On torch eager: the exported pass of each family is bound to it in tests/export."""
    reference = _fixture(name)
    path = _network_pickle(reference, tmp_path / "network-snapshot-000000.pkl")
    out = tmp_path / "run"
    args = ["run", "-o", str(out), "--generator", f"stylegan3={path}", "-p", "color", "-q"]
    args += ["-n", "16", "--rescore-num", "2", "--chosen-num", "4", "--batch-size", "8"]
    args += ["-s", "brightness", "--backend", "torch", "--device", "cpu"]
    if reference["class_index"] is not None:
        missing = CliRunner().invoke(app, args)
        assert missing.exit_code == 2 and "--class-index" in missing.stderr
        args += ["--class-index", str(reference["class_index"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["boundaries"]["brightness"]
    assert summary["layer_wise"] is True
    assert len(entry["layer_delta"]) == len(reference["ws"][0])  # one row per ws entry
    assert np.isfinite(entry["delta_all_layers"])


# ----------------------------------------------------------------------------------------------
# ONNX export of the fused pass


class _PixelPredictor(nn.Module):
    """Scores = the image's pixels, so the fused pass's parity is the images' parity."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.semantic_names = tuple(f"p{i}" for i in range(3 * resolution * resolution))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


@pytest.mark.slow
def test_fused_pass_exports_to_onnx_and_matches_torch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from rescore.export.onnx import ExportSettings, export_part

    # Every filter path at once: radial (2D) and separable filters, 3x3 convs, a user transform.
    config = StyleGAN3Config(
        z_dim=8, c_dim=0, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
        num_layers=4, use_radial_filters=True,
    )  # fmt: skip
    model = random_stylegan3(config, seed=3)
    with torch.no_grad():
        model.synthesis.input.transform[:2, 2] = torch.tensor([0.3, -0.2])
    predictor = _PixelPredictor(16)
    (graph,) = export_part(
        "fused", model, [predictor], tmp_path, settings=ExportSettings(optimize=False)
    )
    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        wp = torch.randn(batch, model.num_layers, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = predictor(model.synthesize(wp)).numpy()
        (actual,) = session.run(None, {graph.input_name: wp.numpy()})
        assert _relative_error(actual, expected) < PARITY_RTOL
