"""ColorPredictor on images whose colour statistics are known in closed form."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch

from rescore.models.base import Predictor
from rescore.models.color import COLOR_SEMANTICS, ColorPredictor
from rescore.models.errors import ShapeMismatchError

COLUMN = {name: index for index, name in enumerate(COLOR_SEMANTICS)}


def _images(rgb01: np.ndarray) -> torch.Tensor:
    """[B, H, W, 3] RGB in [0, 1] -> generator-style [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(rgb01.astype(np.float32)).permute(0, 3, 1, 2) * 2.0 - 1.0


def _scores(rgb01: np.ndarray) -> dict[str, np.ndarray]:
    scores = ColorPredictor()(_images(rgb01)).double().numpy()
    return {name: scores[:, index] for name, index in COLUMN.items()}


def _solid(r: float, g: float, b: float, size: int = 4) -> np.ndarray:
    return np.broadcast_to(np.array([r, g, b]), (1, size, size, 3)).copy()


def test_is_a_predictor_with_one_column_per_name():
    predictor = ColorPredictor()
    assert isinstance(predictor, Predictor)
    assert predictor(torch.zeros(5, 3, 8, 6)).shape == (5, len(predictor.semantic_names))
    assert predictor(torch.zeros(1, 3, 8, 6)).dtype == torch.float32


@pytest.mark.parametrize(
    "rgb", [(0.8, 0.4, 0.2), (0.1, 0.7, 0.5), (0.3, 0.2, 0.9), (1.0, 1.0, 0.0)]
)
def test_solid_colour(rgb):
    r, g, b = rgb
    scores = _scores(_solid(r, g, b))
    hue, saturation, value = colorsys.rgb_to_hsv(r, g, b)
    chroma = saturation * value
    expected = {
        "brightness": 0.299 * r + 0.587 * g + 0.114 * b,
        "contrast": 0.0,
        "saturation": saturation,
        # no spread; the mean opponent vector (rg, yb) on the 0..255 scale, weighted 0.3
        "colorfulness": 0.3 * 255 * math.hypot(r - g, (r + g) / 2 - b),
        "warmth": r - b,
        "hue_red": chroma * math.cos(2 * math.pi * hue),
        "hue_green": chroma * math.cos(2 * math.pi * hue - math.radians(120)),
        "hue_blue": chroma * math.cos(2 * math.pi * hue - math.radians(240)),
    }
    for name, value in expected.items():
        assert scores[name][0] == pytest.approx(value, abs=2e-5), name


def test_primaries_point_along_their_hue_direction():
    primaries = np.concatenate([_solid(1, 0, 0), _solid(0, 1, 0), _solid(0, 0, 1)])
    scores = _scores(primaries)
    hues = np.stack([scores["hue_red"], scores["hue_green"], scores["hue_blue"]], axis=1)
    np.testing.assert_allclose(hues, np.where(np.eye(3) > 0, 1.0, -0.5), atol=1e-6)


@pytest.mark.parametrize("level", [0.0, 0.25, 1.0])
def test_greys_have_no_colour(level):
    scores = _scores(_solid(level, level, level))
    assert scores["brightness"][0] == pytest.approx(level, abs=1e-6)
    for name in [
        "contrast",
        "saturation",
        "colorfulness",
        "warmth",
        "hue_red",
        "hue_green",
        "hue_blue",
    ]:
        assert scores[name][0] == pytest.approx(0.0, abs=1e-6), name
    assert all(np.isfinite(value).all() for value in scores.values())


def test_half_black_half_white_has_half_contrast():
    image = np.zeros((1, 6, 8, 3))
    image[:, :, 4:] = 1.0
    scores = _scores(image)
    assert scores["brightness"][0] == pytest.approx(0.5, abs=1e-6)
    assert scores["contrast"][0] == pytest.approx(0.5, abs=1e-6)  # population std of {0, 1}
    assert scores["colorfulness"][0] == pytest.approx(0.0, abs=1e-4)


def test_red_ramp_colorfulness_and_warmth():
    ramp = np.linspace(0.0, 1.0, 16)
    image = np.zeros((1, 4, 16, 3))
    image[..., 0] = ramp  # R goes 0..1 left to right, G = B = 0
    scores = _scores(image)
    # rg = 255 R and yb = 127.5 R: both spreads and means scale with |(1, 1/2)| = sqrt(1.25)
    expected = 255 * math.sqrt(1.25) * (ramp.std() + 0.3 * ramp.mean())
    assert scores["colorfulness"][0] == pytest.approx(expected, rel=1e-5)
    assert scores["warmth"][0] == pytest.approx(ramp.mean(), abs=1e-6)
    assert scores["saturation"][0] == pytest.approx(15 / 16, abs=1e-6)  # all but the black pixel
    assert scores["hue_red"][0] == pytest.approx(ramp.mean(), abs=1e-6)


def test_matches_per_pixel_colorsys_on_random_images():
    rng = np.random.default_rng(0)
    images = rng.random((3, 5, 7, 3))
    images[0, 0, 0] = 0.0  # a black pixel
    images[1, 1, 1] = 0.5  # a grey pixel
    scores = _scores(images)
    for index, image in enumerate(images):
        hsv = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in image.reshape(-1, 3)])
        chroma = hsv[:, 1] * hsv[:, 2]
        angle = 2 * math.pi * hsv[:, 0]
        assert scores["saturation"][index] == pytest.approx(hsv[:, 1].mean(), abs=1e-5)
        for name, direction in [("hue_red", 0), ("hue_green", 120), ("hue_blue", 240)]:
            expected = (chroma * np.cos(angle - math.radians(direction))).mean()
            assert scores[name][index] == pytest.approx(expected, abs=1e-5), name
    hue_sum = scores["hue_red"] + scores["hue_green"] + scores["hue_blue"]
    np.testing.assert_allclose(hue_sum, 0.0, atol=1e-5)


def test_clips_to_the_nominal_range_and_scores_each_image_alone():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.uniform(-1.5, 1.5, (4, 3, 6, 6)).astype(np.float32))
    predictor = ColorPredictor()
    batch = predictor(images)
    assert torch.equal(batch, predictor(images.clamp(-1.0, 1.0)))
    for index in range(4):
        torch.testing.assert_close(batch[index : index + 1], predictor(images[index : index + 1]))


def test_rejects_images_that_are_not_rgb_batches():
    with pytest.raises(ShapeMismatchError, match=r"\[B, 3, H, W\]"):
        ColorPredictor()(torch.zeros(2, 4, 8, 8))
