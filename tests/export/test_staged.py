"""Staged ONNX graphs: ONNX Runtime reuses the generator prefix with torch eager's scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error

from rescore.export.graphs import GraphFiles
from rescore.export.onnx import ExportError, export_onnx
from rescore.export.ort import OrtSession
from rescore.export.session import TorchSession, manipulate_and_score, score_layer_sets
from rescore.kernels.manipulate import layer_sets_all_and_each

pytest.importorskip("onnxruntime")


def _directions(num_layers: int, dim: int) -> np.ndarray:
    direction = np.random.default_rng(1).standard_normal((1, num_layers, dim))
    return (direction / np.linalg.norm(direction, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("models", ["synthetic", "stylegan_color"])
def test_ort_prefix_reuse_matches_torch_eager(models, request, tmp_path):
    generator, predictor = request.getfixturevalue(models)
    graphs = GraphFiles.cached(generator, [predictor], tmp_path)  # exported on first use
    if models == "synthetic":  # the session's export of these very models: reuse its files
        export = request.getfixturevalue("synthetic_export")
        graphs.directory.mkdir(parents=True)
        for part in ("fused", "mapping"):
            for suffix in (".onnx", ".json"):
                shutil.copy(export.graphs[part].path.with_suffix(suffix), graphs.directory)
    torch_session = TorchSession(generator, [predictor], "cpu")
    geometry, names = torch_session.geometry, torch_session.semantic_names
    with OrtSession(graphs, geometry, names, device=torch.device("cpu")) as ort:
        reuse = ort.prefix_reuse()
        assert reuse is not None
        z = np.random.default_rng(0).standard_normal((5, generator.z_dim)).astype(np.float32)
        wp = torch_session.geometry.truncate(torch_session.map(z))  # [5, L, D]
        direction = _directions(generator.num_layers, generator.w_dim)
        # all layers, the first and the last: entry 0 (the fused graph) and the last entry stage
        sets = layer_sets_all_and_each(generator.num_layers)[[0, 1, generator.num_layers]]
        entries = set(reuse.entries(sets).tolist()) - {0}
        assert entries  # some sets branch from a later stage
        fast = score_layer_sets(ort, wp, direction, sets, 2.0, batch_size=4)
        eager = manipulate_and_score(torch_session, wp, direction, sets, 2.0, batch_size=4)
        assert fast.shape == eager.shape == (1, len(sets), 5, len(ort.semantic_names))
        assert relative_error(fast, eager) < PARITY_RTOL
        assert np.abs(eager[:, 1:] - eager[:, :1]).max() > 0  # the sets do differ
        count = len(reuse.stage_layers)
    exported = {p.stem for p in graphs.directory.glob("*.onnx")}  # one graph per stage + scorer
    assert exported == {"fused", "mapping", "scorer", *(f"stage_{e}" for e in range(count))}
    # a corrupt stage is exported again, alone; a stage from another layout is refused
    stage, other = graphs.directory / "stage_1.onnx", graphs.directory / "stage_0.onnx"
    untouched = other.stat().st_mtime_ns
    stage.write_bytes(stage.read_bytes()[:100])
    assert graphs.graph("stage_1").path == stage  # checked: it hashes to its sidecar again
    assert stage.stat().st_size > 100 and other.stat().st_mtime_ns == untouched
    side = other.with_suffix(".json")
    side.write_text(side.read_text().replace('"stage_layers"', '"stage_layers": [], "was"'))
    with pytest.raises(ExportError, match="splits synthesis otherwise"):
        OrtSession(graphs, geometry, names, device=torch.device("cpu")).prefix_reuse()


def test_staged_graphs_need_stages(tmp_path):
    from rescore.models.lineargan import LinearSemanticPredictor
    from rescore.models.synthetic import build_synthetic

    generator = build_synthetic(resolution=32)
    reader = LinearSemanticPredictor((2,), (8,), ("a", "b"), torch.ones(2, 8), torch.zeros(2), 32)
    assert not GraphFiles.cached(generator, [reader], tmp_path).staged
    with pytest.raises(ExportError, match="no synthesis stages"):
        export_onnx(generator, [reader], tmp_path, parts=("staged",))


def test_an_older_exports_prefix_and_suffix_files_are_ignored(synthetic, tmp_path):
    """Before stage_<e> + scorer, the staged part was prefix.onnx + suffix_<e>.onnx: a directory
    holding only those offers no staged graphs (the cache exports the new ones on use)."""
    generator, predictor = synthetic
    for name in ("prefix", "suffix_1"):
        (tmp_path / f"{name}.onnx").write_bytes(b"old")
        (tmp_path / f"{name}.json").write_text("{}")
    assert not GraphFiles.given(tmp_path, generator, [predictor]).staged
    with pytest.raises(ExportError, match="holds no stage_0.onnx"):
        GraphFiles.given(tmp_path, generator, [predictor]).graph("stage_0")
