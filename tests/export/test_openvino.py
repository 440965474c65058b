"""The OpenVINO backend (optional extra) against torch eager on the same exported graphs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from export_helpers import PARITY_RTOL, relative_error

from rescore.export.backends import BackendSpec, open_session
from rescore.export.session import TorchSession
from rescore.models.errors import BackendUnavailableError

openvino = pytest.importorskip("openvino", reason="needs the openvino extra (rescore[openvino])")


def test_openvino_scores_match_torch_eager(synthetic, synthetic_export):
    generator, predictor = synthetic
    reference = TorchSession(generator, [predictor], "cpu")
    spec = BackendSpec("openvino", "cpu", onnx_dir=synthetic_export.directory)
    with open_session(generator, [predictor], spec) as session:
        assert (session.info.backend, session.info.precision) == ("openvino", "fp32")
        z = np.random.default_rng(0).standard_normal((5, generator.z_dim)).astype(np.float32)
        w = session.map(z)
        assert relative_error(w, reference.map(z)) < PARITY_RTOL
        wp = session.geometry.truncate(w)
        for batch in (wp, wp[:2]):  # two batch sizes: two compiled shapes
            assert relative_error(session.score(batch), reference.score(batch)) < PARITY_RTOL
        difference = np.abs(session.render(wp).astype(int) - reference.render(wp).astype(int))
        assert difference.max() <= 1


def test_openvino_missing_or_on_cuda_names_the_fix(synthetic, monkeypatch):
    generator, predictor = synthetic
    with pytest.raises(BackendUnavailableError, match="--device cpu"):
        open_session(generator, [predictor], BackendSpec("openvino", "cuda"))
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match=r"rescore\[openvino\]"):
        open_session(generator, [predictor], BackendSpec("openvino", "cpu"))
