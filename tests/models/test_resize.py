"""PilBilinearResize against Pillow itself, pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime
import PIL
import pytest
import torch
from PIL import Image

from rescore.models.errors import ShapeMismatchError
from rescore.models.resize import PilBilinearResize, pil_bilinear_coefficients

# Pillow >= 13 may run the vertical pass first (python-pillow/Pillow#9549); compare like with like.
LEGACY_PILLOW = int(PIL.__version__.split(".")[0]) < 13


def _pillow(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [B, H, W, 3] -> Pillow bilinear resize to (height, width), one image at a time."""
    height, width = size
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
            for image in images
        ]
    )


def _ours(images: np.ndarray, size: tuple[int, int], **kwargs) -> np.ndarray:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # [B, 3, H, W]
    out = PilBilinearResize(size, legacy_pass_order=LEGACY_PILLOW, **kwargs)(batch)
    values = out.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(values, np.round(values)), "resize must return integer levels"
    return values.astype(np.int64)


@pytest.mark.parametrize(
    ("in_size", "out_size"),
    [
        ((256, 256), (224, 224)),  # the HiGAN case: 256 generator -> 224 predictor
        ((64, 64), (224, 224)),  # upscaling
        ((8, 8), (224, 224)),  # strong upscaling
        ((40, 72), (224, 224)),  # non-square input
        ((224, 300), (224, 224)),  # one pass skipped
        ((97, 61), (23, 50)),  # shrink one axis, grow the other
        ((120, 40), (20, 36)),  # Pillow 13 resamples vertically first here
        ((3, 5), (7, 2)),
    ],
)
def test_equals_pillow_for_every_pixel(in_size, out_size):
    rng = np.random.default_rng(sum(in_size) * 1000 + sum(out_size))
    images = rng.integers(0, 256, size=(3, *in_size, 3), dtype=np.uint8)
    difference = np.abs(_ours(images, out_size) - _pillow(images, out_size).astype(np.int64))
    assert difference.max() == 0, f"{(difference > 0).mean():.2%} of pixels differ"


def test_equals_pillow_at_generator_resolution_with_extreme_sums():
    """1024 -> 224: 11 taps, sums near 2**30; saturated and alternating pixels stress the carry."""
    rng = np.random.default_rng(0)
    checker = (np.indices((1024, 1024)).sum(axis=0) % 2 * 255).astype(np.uint8)
    images = np.stack(
        [
            np.full((1024, 1024, 3), 255, dtype=np.uint8),
            np.repeat(checker[..., None], 3, axis=2),
            rng.integers(0, 256, size=(1024, 1024, 3), dtype=np.uint8),
        ]
    )
    difference = np.abs(_ours(images, (224, 224)) - _pillow(images, (224, 224)).astype(np.int64))
    assert difference.max() == 0, f"{(difference > 0).mean():.2%} of pixels differ"


def test_pass_orders_differ_only_where_pillow_13_reorders():
    rng = np.random.default_rng(3)
    batch = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 120, 40))).float()
    reordered = PilBilinearResize((20, 36))(batch)
    legacy = PilBilinearResize((20, 36), legacy_pass_order=True)(batch)
    assert not torch.equal(reordered, legacy)  # the rounding between passes differs
    square = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 96, 96))).float()
    for size in [(24, 24), (200, 200)]:  # square to square: what generators feed predictors
        assert torch.equal(
            PilBilinearResize(size)(square), PilBilinearResize(size, legacy_pass_order=True)(square)
        )


def test_coefficients_are_pillow_fixed_point_weights():
    weights = pil_bilinear_coefficients(256, 224)
    assert weights.shape == (224, 256) and weights.min() >= 0
    # normalized in double, then each rounded to 22-bit fixed point: rows sum to 2**22 +- taps
    taps = (weights > 0).sum(axis=1)
    assert np.all(np.abs(weights.sum(axis=1) - 2**22) <= taps)
    # downscaling widens the triangle filter: 256 -> 224 uses up to 2 * ceil(256 / 224) + 1 taps
    assert taps.max() <= 5 and taps.min() >= 2


def test_keeps_batch_and_channels_independent():
    rng = np.random.default_rng(4)
    batch = torch.from_numpy(rng.integers(0, 256, size=(4, 3, 30, 50))).float()
    resize = PilBilinearResize((16, 16))
    whole = resize(batch)
    one_by_one = torch.cat(
        [resize(batch[i : i + 1, c : c + 1]) for i in range(4) for c in range(3)]
    )
    assert torch.equal(whole.reshape(12, 1, 16, 16), one_by_one)


def test_refuses_what_it_cannot_do_exactly():
    with pytest.raises(ShapeMismatchError, match="shrinks more"):
        PilBilinearResize((8, 8))(torch.zeros(1, 3, 8, 4000))
    with pytest.raises(ShapeMismatchError, match=r"\[B, C, H, W\]"):
        PilBilinearResize((8, 8))(torch.zeros(3, 16, 16))
    with pytest.raises(ShapeMismatchError, match="positive"):
        PilBilinearResize((0, 8))


@pytest.mark.parametrize("dynamo", [False, True])
def test_stays_exact_through_onnx_runtime(dynamo):
    """Exported by either torch exporter, the graph holds the same constants and floors."""
    rng = np.random.default_rng(6)
    batch = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 40, 72))).float()
    resize = PilBilinearResize((24, 24))
    expected = resize(batch).numpy()  # the eager call also builds the matrices before export
    if dynamo:
        model = torch.onnx.export(resize, (batch,), dynamo=True).model_proto.SerializeToString()
    else:
        buffer = io.BytesIO()
        torch.onnx.export(resize, (batch,), buffer, dynamo=False)
        model = buffer.getvalue()
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
    assert np.array_equal(result, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_cuda_equals_cpu_even_with_tf32(allow_tf32):
    rng = np.random.default_rng(5)
    batch = torch.from_numpy(rng.integers(0, 256, size=(4, 3, 1024, 1024))).float()
    expected = PilBilinearResize((224, 224))(batch)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        result = PilBilinearResize((224, 224))(batch.cuda()).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert torch.equal(result, expected)
