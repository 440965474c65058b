"""LinearGAN linear semantic extraction on the synthetic model: 8 rendered images suffice to read
its segmentation off the generator's features, and as a predictor (fused, no image) it gives the
same layer hierarchy as the pixel predictor."""

import numpy as np
import pytest
import torch

from rescore.engine.boundary import Boundary
from rescore.engine.rescore import RescoreConfig, rescore_boundaries
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.engine.stats import delta_statistics
from rescore.export.backends import BackendSpec
from rescore.models.base import truncate
from rescore.models.errors import CheckpointError, ShapeMismatchError
from rescore.models.fused import ScoringPass
from rescore.models.lineargan import LinearSemanticPredictor, fit_lse_file, load_lse, train_lse
from rescore.models.registry import GeneratorOptions, ModelRef, build_predictor
from rescore.models.synthetic import build_synthetic
from rescore.models.synthetic_render import SEGMENT_CLASSES

LAYERS = [1, 3, 5, 7, 9]
RES = 32


@pytest.fixture(scope="module")
def generator():
    return build_synthetic(resolution=RES)


@pytest.fixture(scope="module")
def lse(generator):
    return train_lse(generator, LAYERS, generator.segmentation, SEGMENT_CLASSES, num_images=8)


def _wp(generator, n, seed):
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return truncate(generator.map(z), generator.w_avg, generator.truncation_coefficients())


def test_eight_rendered_images_reproduce_the_renderer_segmentation(generator, lse):
    wp = _wp(generator, 48, seed=123)  # fresh latents, not the 8 it was fitted on
    with torch.no_grad():
        truth = generator.segmentation(wp)  # [N, R, R]
        features = generator.features(wp, LAYERS)
        predicted = lse.logits(features).argmax(dim=1)
        scores = lse(features)  # [N, 3K]
    iou = [
        ((predicted == k) & (truth == k)).sum().item()
        / ((predicted == k) | (truth == k)).sum().item()
        for k in range(len(SEGMENT_CLASSES))
    ]
    # Measured (seed 0, 32 px, layers 1,3,5,7,9): IoU wall 0.998, floor 0.998, picture 0.952,
    # box 0.992; area-fraction error mean 0.0012, max 0.0056 (of the image).
    assert min(iou) >= 0.93, iou
    true_area = torch.stack([(truth == k).float().mean(dim=(1, 2)) for k in range(4)], dim=1)
    error = (scores[:, 0::3] - true_area).abs()
    assert error.mean() <= 0.003 and error.max() <= 0.02, error.max()
    # Centroids: the box's x follows the object_x factor.
    box_x = scores[:, lse.semantic_names.index("box_x")]
    object_x = generator.factor_values(wp)[:, generator.factor_names.index("object_x")]
    assert torch.corrcoef(torch.stack([box_x, object_x]))[0, 1] > 0.99


def test_lse_files_round_trip_through_the_registry(generator, tmp_path):
    path = fit_lse_file(generator, tmp_path / "lse.npz", layers=[0, 4], num_images=2)
    predictor = build_predictor(ModelRef("lineargan", path))
    assert isinstance(predictor, LinearSemanticPredictor) and predictor.reads_features == (0, 4)
    assert predictor.semantic_names[:3] == ("wall_area", "wall_x", "wall_y")
    wp = _wp(generator, 3, seed=1)
    with torch.no_grad():
        fused = ScoringPass(generator, [predictor])(wp)  # features only: no image synthesized
        assert torch.allclose(fused, predictor(generator.features(wp, [0, 4])))
    with pytest.raises(ShapeMismatchError, match="fitted on feature channels"):
        predictor([torch.zeros(1, 3, 4, 4), torch.zeros(1, 8, 16, 16)])
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="rescore lineargan"):
        load_lse(path)


def test_as_predictor_it_gives_the_pixel_predictor_layer_hierarchy(generator, lse, tmp_path):
    from rescore.models.lineargan import save_lse

    path = save_lse(lse, tmp_path / "lse.npz", {})
    spec = ModelSpec(
        ModelRef("synthetic"),
        (ModelRef("synthetic"), ModelRef("lineargan", path)),
        GeneratorOptions(resolution=RES),
    )
    # factor moved -> (pixel semantic, LSE semantic) that should peak in the same layer group
    pairs = {
        "horizon": "wall_area",  # a lower horizon line: more wall
        "object_size": "box_area",
        "object_x": "box_x",
        "object_presence": "picture_area",
    }
    directions = generator.directions.numpy()
    boundaries = [
        Boundary(f, directions[generator.factor_names.index(f)][None].copy()) for f in pairs
    ]
    with open_model_session(spec, BackendSpec("torch", "cpu")) as session:
        run = rescore_boundaries(
            session,
            spec,
            boundaries,
            tmp_path / "r.zarr",
            RescoreConfig(8, 0, 2.0, 8, 8),
            progress=False,
        )
    table = delta_statistics(run.store, accumulators=run.accumulators)
    names = table.semantic_names
    for m, (factor, lse_semantic) in enumerate(pairs.items()):
        group = generator.factor_layers[factor]
        pixel_peak = int(np.argmax(table.delta[m, 1:, names.index(factor)]))
        lse_peak = int(np.argmax(table.delta[m, 1:, names.index(lse_semantic)]))
        assert pixel_peak in group and lse_peak in group, (factor, pixel_peak, lse_peak)
        # and outside the group the LSE semantic barely moves
        outside = [layer for layer in range(10) if layer not in group]
        per_layer = table.delta[m, 1:, names.index(lse_semantic)]
        assert per_layer[list(group)].max() > 0
        assert per_layer[outside].max() < 0.05 * per_layer[list(group)].max()


def test_stylegan_features_and_layer_code_weights():
    from rescore.models.stylegan import StyleGANGenerator

    torch.manual_seed(0)
    model = StyleGANGenerator(
        16, z_space_dim=16, w_space_dim=16, fmaps_base=256, fmaps_max=16, num_mapping_layers=2
    ).eval()
    wp = torch.randn(2, model.num_layers, 16)
    with torch.no_grad():
        features = model.features(wp, [1, model.num_layers - 1])
        assert [tuple(f.shape) for f in features] == [(2, 16, 4, 4), (2, 16, 16, 16)]
        # the deepest feature map through the last ToRGB is the image synthesize paints
        image = model.synthesis.output2(features[1])
        assert torch.allclose(image, model.synthesize(wp), atol=1e-6)
        # and a layer's features do not depend on later codes
        later = wp.clone()
        later[:, 2:] += 1.0
        assert torch.equal(model.features(later, [1])[0], features[0])
    weights = model.layer_code_weights()
    assert len(weights) == model.num_layers
    assert weights[3] is model.synthesis.layer3.epilogue.style_mod.dense.fc.weight
    assert weights[3].shape == (2 * 16, 16)
    with pytest.raises(ShapeMismatchError, match="outside"):
        model.features(wp, [model.num_layers])


def test_export_keeps_feature_readers_inside_the_fused_pass(tmp_path, monkeypatch, caplog):
    """`rescore export`: a predictor that reads features has no graph of its own; the fused pass
    holds it (and matches torch); asked for alone it is a one-line error (tests/engine rows)."""
    ort = pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from rescore.engine.cli import app
    from rescore.export import onnx as onnx_export
    from rescore.models.registry import build_generator

    generator = build_generator(ModelRef("synthetic"))
    lse = fit_lse_file(generator, tmp_path / "lse.npz", layers=[0, 4], num_images=2)
    out = tmp_path / "onnx"
    models = ["--generator", "synthetic", "-p", f"lineargan={lse}", "-p", "color"]
    parts = ["--part", "predictors", "--part", "fused"]
    result = CliRunner().invoke(app, ["export", "-o", str(out), *models, *parts])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in out.glob("*.onnx")) == ["fused", "predictor_1"]
    assert "predictor 0 (LinearSemanticPredictor) reads generator features" in caplog.text
    predictors = [build_predictor(ModelRef("lineargan", lse)), build_predictor(ModelRef("color"))]
    wp = _wp(generator, 3, seed=2)
    with torch.no_grad():
        expected = ScoringPass(generator, predictors)(wp).numpy()
    session = ort.InferenceSession(str(out / "fused.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"wp": wp.numpy()})
    assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4

    # default parts, every predictor reading features: the predictors part is left out, saying so
    exported = []

    def record(part, *args, **kwargs):
        exported.append(part)
        return []

    monkeypatch.setattr(onnx_export, "export_part", record)
    onnx_export.export_onnx(generator, predictors[:1], tmp_path / "all")
    assert exported == ["mapping", "synthesis", "fused"]
