"""Places365 predictor: loading the published formats, HiGAN's preprocessing and scores."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rescore.models.base import Predictor
from rescore.models.errors import CheckpointError, ShapeMismatchError
from rescore.models.places365 import (
    ATTRIBUTE_FILE,
    ATTRIBUTE_WEIGHT_FILE,
    CATEGORY_FILE,
    CHECKPOINT_FILE,
    Places365Predictor,
    WideResNet18,
    genforce_quantize,
    load_places365,
    write_random_places365,
)

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "checkpoint-manifests.json"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return write_random_places365(tmp_path_factory.mktemp("places365"), seed=1)


@pytest.fixture(scope="module")
def predictor(files) -> Places365Predictor:
    return load_places365(files)


def _copy_files(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _small_predictor(clamp: bool = True) -> Places365Predictor:
    """A narrow WideResNet-18 (same code, 8..64 channels) with random eval-mode statistics."""
    torch.manual_seed(0)
    network = WideResNet18(num_classes=365, stage_channels=(8, 16, 32, 64))
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    network.fc.weight.data.normal_(0.0, 0.3)  # both signs
    names = [f"scene_{i}" for i in range(365)], [f"attribute_{i}" for i in range(102)]
    return Places365Predictor(
        network, torch.randn(102, 64), *names, clamp_negative_fc_weights=clamp
    )


def _higan_preprocess(images: torch.Tensor) -> torch.Tensor:
    """HiGAN's path, one image at a time: genforce postprocess, PIL resize, ToTensor, Normalize."""
    arrays = images.numpy()  # float32 [B, 3, H, W]
    arrays = (arrays - (-1.0)) * 255 / (1.0 - (-1.0))
    arrays = np.clip(arrays + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    tensors = []
    for array in arrays:
        resized = Image.fromarray(array).resize((224, 224), Image.BILINEAR)
        tensor = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div(255)
        tensors.append((tensor - MEAN) / STD)
    return torch.stack(tensors)


def _higan_scores(predictor: Places365Predictor, images: torch.Tensor, clamp: bool) -> np.ndarray:
    """HiGAN's ScenePredictor._predict on the same weights, per image, with its fc-clamp quirk."""
    network = copy.deepcopy(predictor.network).eval()
    if clamp:
        fc_weight = list(network.parameters())[-2].data.numpy()
        fc_weight[fc_weight < 0] = 0
    attribute_weight = predictor.attribute_weight.numpy()
    rows = []
    with torch.no_grad():
        for tensor in _higan_preprocess(images):
            logits, features = network(tensor[None])
            categories = torch.softmax(logits, dim=1).numpy()
            rows.append(np.concatenate([categories, features.numpy().dot(attribute_weight.T)], 1))
    return np.concatenate(rows)


def test_round_trip_of_published_formats(files, predictor):
    saved = torch.load(files / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    assert all(name.startswith("module.") for name in saved)
    loaded = predictor.network.state_dict()
    assert sorted(loaded) == sorted(name.removeprefix("module.") for name in saved)
    for name, value in loaded.items():
        assert torch.equal(value, saved[f"module.{name}"]), name
    assert (saved["module.fc.weight"] < 0).any()  # the clamp is applied at use, not stored
    weight = np.load(files / ATTRIBUTE_WEIGHT_FILE, allow_pickle=False)
    assert np.array_equal(predictor.attribute_weight.numpy(), weight)
    for name, value in saved.items():
        if name.endswith("running_var"):
            assert (value > 0).all(), name


def test_names_follow_higan(files, predictor):
    lines = (files / CATEGORY_FILE).read_text().splitlines()
    path, index = lines[7].split(" ")  # e.g. '/h/scene_007/indoor 7'
    expected = path[3:].replace("/", "__")
    assert "__" in expected and predictor.category_names[int(index)] == expected
    assert len(predictor.category_names) == 365 and len(predictor.attribute_names) == 102
    first_attribute = (files / ATTRIBUTE_FILE).read_text().splitlines()[0]
    assert predictor.attribute_names[0] == first_attribute.replace(" ", "_") != first_attribute
    assert (
        predictor.semantic_names
        == tuple(f"category_{name}" for name in predictor.category_names)
        + predictor.attribute_names
    )
    assert len(set(predictor.semantic_names)) == 467
    assert isinstance(predictor, Predictor)


def test_parameters_match_the_published_manifest():
    manifest = json.loads(MANIFEST.read_text())["checkpoints"]["places365_wideresnet18"]
    state = WideResNet18().state_dict()
    assert {name: list(value.shape) for name, value in state.items()} == manifest


def test_loads_a_checkpoint_without_the_module_prefix(files, predictor, tmp_path):
    directory = _copy_files(files, tmp_path / "plain")
    checkpoint = torch.load(files / CHECKPOINT_FILE, weights_only=True)
    checkpoint["state_dict"] = {
        name.removeprefix("module."): value for name, value in checkpoint["state_dict"].items()
    }
    torch.save(checkpoint, directory / CHECKPOINT_FILE)
    loaded = load_places365(directory).network.state_dict()
    for name, value in predictor.network.state_dict().items():
        assert torch.equal(loaded[name], value), name


def test_loads_the_2017_file_without_num_batches_tracked(files, predictor, tmp_path):
    """The published file predates PyTorch 0.4.1: no `*.num_batches_tracked` (20 buffers)."""
    directory = _copy_files(files, tmp_path / "pre041")
    checkpoint = torch.load(files / CHECKPOINT_FILE, weights_only=True)
    counters = [k for k in checkpoint["state_dict"] if k.endswith("num_batches_tracked")]
    assert len(counters) == 20
    for name in counters:
        del checkpoint["state_dict"][name]
    torch.save(checkpoint, directory / CHECKPOINT_FILE)
    loaded = load_places365(directory)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), predictor(images), rtol=0, atol=0)


def test_scores_match_higan_per_image_pipeline(predictor):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 256, 256) * 2.4 - 1.2  # out of range values get clipped
    with torch.no_grad():
        scores = predictor(images).numpy()
    expected = _higan_scores(predictor, images, clamp=True)
    assert scores.shape == (2, 467) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[:, :365].sum(axis=1), 1.0, rtol=1e-5)
    # batched vs per-image convolutions and numpy vs torch products: float32 rounding only
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(256, 256), (64, 64), (40, 72)])
def test_preprocessing_equals_pil_pipeline_bit_for_bit(size):
    predictor = _small_predictor()
    torch.manual_seed(2)
    images = torch.rand(3, 3, *size) * 2.2 - 1.1
    assert torch.equal(predictor.preprocess(images), _higan_preprocess(images))


def test_quantization_matches_genforce_at_rounding_boundaries():
    levels = torch.arange(0, 256, dtype=torch.float32)
    boundaries = (levels - 0.5) / 127.5 - 1.0  # values whose level is k - 0.5 exactly or nearly
    images = torch.cat(
        [
            boundaries,
            torch.nextafter(boundaries, torch.tensor(2.0)),
            torch.nextafter(boundaries, torch.tensor(-2.0)),
            torch.tensor([-1.0, 1.0, -3.0, 3.0, 0.0]),
        ]
    )
    array = images.numpy()
    expected = np.clip((array - (-1.0)) * 255 / 2.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(genforce_quantize(images).numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("clamp", [True, False])
def test_fc_clamp_reproduces_higan_quirk(clamp):
    predictor = _small_predictor(clamp)
    torch.manual_seed(3)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        scores = predictor(images).numpy()
    np.testing.assert_allclose(
        scores, _higan_scores(predictor, images, clamp), rtol=1e-5, atol=1e-6
    )
    other = _higan_scores(predictor, images, not clamp)
    assert np.abs(scores[:, :365] - other[:, :365]).max() > 1e-4  # the clamp changes categories
    np.testing.assert_allclose(scores[:, 365:], other[:, 365:], rtol=1e-5, atol=1e-6)


def test_rejects_images_that_are_not_rgb_batches():
    predictor = _small_predictor()
    with pytest.raises(ShapeMismatchError, match=r"\[B, 3, H, W\]"):
        predictor(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ShapeMismatchError):
        predictor(torch.zeros(3, 32, 32))


@pytest.mark.parametrize(
    "name", [CHECKPOINT_FILE, ATTRIBUTE_WEIGHT_FILE, CATEGORY_FILE, ATTRIBUTE_FILE]
)
def test_missing_file_is_named(files, tmp_path, name):
    directory = _copy_files(files, tmp_path / "incomplete")
    (directory / name).unlink()
    with pytest.raises(CheckpointError) as error:
        load_places365(directory)
    message = str(error.value)
    assert name in message and str(directory) in message
    others = {CHECKPOINT_FILE, ATTRIBUTE_WEIGHT_FILE, CATEGORY_FILE, ATTRIBUTE_FILE} - {name}
    assert not any(other in message for other in others)


def test_wrong_attribute_weights_are_refused(files, tmp_path):
    directory = _copy_files(files, tmp_path / "weights")
    np.save(directory / ATTRIBUTE_WEIGHT_FILE, np.zeros((101, 512), dtype=np.float32))
    with pytest.raises(CheckpointError, match=r"\(101, 512\)"):
        load_places365(directory)
    np.save(directory / ATTRIBUTE_WEIGHT_FILE, np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="not a plain .npy"):
        load_places365(directory)


def test_wrong_labels_are_refused(files, tmp_path):
    directory = _copy_files(files, tmp_path / "labels")
    lines = (files / CATEGORY_FILE).read_text().splitlines()
    (directory / CATEGORY_FILE).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CheckpointError, match="364 entries"):
        load_places365(directory)
    (directory / CATEGORY_FILE).write_text("\n".join([*lines[:-1], lines[0]]) + "\n")
    with pytest.raises(CheckpointError, match="repeats index 0"):
        load_places365(directory)
    (directory / CATEGORY_FILE).write_text("\n".join(lines) + "\n")
    attributes = (files / ATTRIBUTE_FILE).read_text().splitlines()
    (directory / ATTRIBUTE_FILE).write_text("\n".join(attributes[:101]) + "\n")
    with pytest.raises(CheckpointError, match="101 names"):
        load_places365(directory)


def test_checkpoint_that_does_not_fit_is_refused(files, tmp_path):
    directory = _copy_files(files, tmp_path / "misfit")
    checkpoint = torch.load(files / CHECKPOINT_FILE, weights_only=True)
    del checkpoint["state_dict"]["module.layer2.0.downsample.0.weight"]
    torch.save(checkpoint, directory / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="layer2.0.downsample.0.weight"):
        load_places365(directory)
    torch.save(checkpoint["state_dict"], directory / CHECKPOINT_FILE)  # no 'state_dict' entry
    with pytest.raises(CheckpointError, match="state_dict"):
        load_places365(directory)
