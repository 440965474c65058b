"""The real-size pass: StyleGAN-256 + Places365 (random weights, published file formats) on ONNX
Runtime CPU against torch eager, batch 2 (the one large export in the test set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error

from rescore.export.backends import BackendSpec, open_session
from rescore.export.session import TorchSession
from rescore.models.places365 import load_places365, write_random_places365
from rescore.models.stylegan import load_stylegan, save_random_stylegan


@pytest.mark.slow
def test_stylegan256_places365_scores_on_onnxruntime_match_torch(tmp_path):
    generator = load_stylegan(save_random_stylegan(tmp_path / "g.pth", resolution=256))
    predictor = load_places365(write_random_places365(tmp_path / "places365"))
    reference = TorchSession(generator, [predictor], "cpu")
    spec = BackendSpec("onnxruntime", "cpu", cache_dir=tmp_path / "cache")
    with open_session(generator, [predictor], spec) as session:
        assert session.info.backend == "onnxruntime"
        z = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
        w = session.map(z)
        assert relative_error(w, reference.map(z)) < PARITY_RTOL
        wp = session.geometry.truncate(w)  # [2, 14, 512]
        scores = session.score(wp)
    with torch.no_grad():
        expected = reference.score(wp)
    assert scores.shape == (2, 365 + 102)
    assert relative_error(scores, expected) < PARITY_RTOL
    # the probabilities are not flat: the comparison sees a real ranking of categories
    assert np.array_equal(scores[:, :365].argmax(axis=1), expected[:, :365].argmax(axis=1))
    assert expected[:, :365].max() > 10 / 365
