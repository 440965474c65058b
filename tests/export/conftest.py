"""Small seeded models and their exported graphs, shared by the export tests (exports are slow)."""

from __future__ import annotations

import pytest
from export_helpers import tiny_stylegan

from rescore.export.onnx import ExportResult, export_onnx
from rescore.models.color import ColorPredictor
from rescore.models.synthetic import build_synthetic, build_synthetic_predictor


@pytest.fixture(scope="session")
def synthetic():
    """The synthetic scene generator (32px) and its pixel predictor."""
    return build_synthetic(resolution=32), build_synthetic_predictor()


@pytest.fixture(scope="session")
def synthetic_export(synthetic, tmp_path_factory) -> ExportResult:
    """Every part of the synthetic model, exported once for the whole test session."""
    generator, predictor = synthetic
    out = tmp_path_factory.mktemp("synthetic-onnx")
    return export_onnx(generator, [predictor], out, sources={"generator": {"name": "synthetic"}})


@pytest.fixture(scope="session")
def stylegan_color():
    """A tiny StyleGAN with the weightless colour predictor."""
    return tiny_stylegan(), ColorPredictor().eval()
