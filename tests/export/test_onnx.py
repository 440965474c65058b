"""torch -> ONNX: checked files, dynamic batch, sidecars, parity of every part with torch eager."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error
from torch import nn

from rescore.export.cache import model_digest
from rescore.export.onnx import (
    ExportError,
    ExportSettings,
    MappingGraph,
    export_graph,
    file_digest,
    read_sidecar,
)
from rescore.models.resize import PilBilinearResize


def _run(path, array: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: array})[0]


def test_every_part_is_a_checked_opset_18_graph_with_a_dynamic_batch_and_a_sidecar(
    synthetic, synthetic_export
):
    generator, predictor = synthetic
    graphs = synthetic_export.graphs
    assert sorted(graphs) == ["fused", "mapping", "predictor_0", "synthesis"]
    expected_io = {
        "mapping": (("z", ["batch", 32]), ("w", ["batch", 32])),
        "synthesis": (("wp", ["batch", 10, 32]), ("images", ["batch", 3, 32, 32])),
        "predictor_0": (("images", ["batch", 3, 32, 32]), ("scores", ["batch", 9])),
        "fused": (("wp", ["batch", 10, 32]), ("scores", ["batch", 9])),
    }
    digest = model_digest(generator, [predictor])
    for name, graph in graphs.items():
        onnx.checker.check_model(str(graph.path), full_check=True)
        proto = onnx.load(str(graph.path))
        opset = {o.domain: o.version for o in proto.opset_import}[""]
        assert opset >= 17
        side = json.loads(graph.path.with_suffix(".json").read_text())
        (in_name, in_shape), (out_name, out_shape) = expected_io[name]
        assert side["inputs"] == [{"name": in_name, "shape": in_shape, "dtype": "float32"}]
        assert side["outputs"] == [{"name": out_name, "shape": out_shape, "dtype": "float32"}]
        assert [i.name for i in proto.graph.input] == [in_name]
        assert side["opset"] == opset and side["rescore_version"] and side["torch_version"]
        assert side["model_digest"] == digest
        assert side["sources"] == {"generator": {"name": "synthetic"}}
        assert side["onnx_sha256"] == file_digest(graph.path)
        assert read_sidecar(graph.path).meta == side
    names = list(predictor.semantic_names)
    assert graphs["fused"].meta["semantic_names"] == names
    assert graphs["predictor_0"].meta["semantic_names"] == names


@pytest.mark.parametrize("batch", [1, 5])
def test_each_part_matches_torch_eager_at_any_batch_size(synthetic, synthetic_export, batch):
    generator, predictor = synthetic
    graphs = synthetic_export.graphs
    rng = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, 32, generator=rng)
    with torch.no_grad():
        w = generator.map(z)
        wp = w[:, None].expand(-1, 10, -1) + 0.5 * torch.randn(batch, 10, 32, generator=rng)
        images = generator.synthesize(wp)
        scores = predictor(images)
    assert relative_error(_run(graphs["mapping"].path, z.numpy()), w.numpy()) < PARITY_RTOL
    assert relative_error(_run(graphs["synthesis"].path, wp.numpy()), images.numpy()) < PARITY_RTOL
    assert relative_error(_run(graphs["predictor_0"].path, images.numpy()), scores.numpy()) < (
        PARITY_RTOL
    )
    assert relative_error(_run(graphs["fused"].path, wp.numpy()), scores.numpy()) < PARITY_RTOL


class _ResizeThenScale(nn.Module):
    """Quantized pixels -> exact PIL resize -> a float op outside the resize."""

    def __init__(self) -> None:
        super().__init__()
        self.resize = PilBilinearResize((7, 5))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return self.resize(levels) * 0.5 + 1.0


def test_exact_resize_survives_export_and_its_nodes_are_marked_float32(tmp_path):
    module = _ResizeThenScale()
    levels = torch.randint(0, 256, (3, 3, 19, 23), generator=torch.Generator().manual_seed(0))
    levels = levels.float()
    graph = export_graph(
        module, levels, tmp_path / "resize.onnx", input_name="levels", output_name="out"
    )
    with torch.no_grad():
        expected = module(levels).numpy()
    assert np.array_equal(_run(graph.path, levels.numpy()), expected)  # bit-exact, not close
    marked = set(graph.meta["fp32_nodes"])
    proto = onnx.load(str(graph.path))
    ops = {node.name: node.op_type for node in proto.graph.node}
    assert {ops[name] for name in marked} >= {"MatMul", "Floor"}
    # the scale outside the resize module stays unmarked
    tail = [n.name for n in proto.graph.node if n.output[0] == proto.graph.output[0].name]
    assert tail and not marked & set(tail)


def test_external_data_is_written_beside_the_file_and_covered_by_the_digest(synthetic, tmp_path):
    generator, _ = synthetic
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    graph = export_graph(
        MappingGraph(generator),
        z,
        tmp_path / "mapping.onnx",
        input_name="z",
        output_name="w",
        settings=ExportSettings(external_data=True),
    )
    data_files = graph.meta["external_data"]
    assert data_files and all((tmp_path / name).is_file() for name in data_files)
    with torch.no_grad():
        assert relative_error(_run(graph.path, z.numpy()), generator.map(z).numpy()) < PARITY_RTOL
    before = file_digest(graph.path, data_files)
    data = tmp_path / data_files[0]
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\1")
    assert file_digest(graph.path, data_files) != before


def test_export_refuses_opsets_the_exporter_cannot_write_and_explains_failures(tmp_path):
    with pytest.raises(ExportError, match="--opset 18"):
        ExportSettings(opset=17)

    class Eigen(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigh(x @ x.transpose(-1, -2))[0]

    with pytest.raises(ExportError, match="Eigen.*eigh.*export-friendly"):
        export_graph(
            Eigen(), torch.randn(2, 3, 3), tmp_path / "e.onnx", input_name="x", output_name="y"
        )
    assert not (tmp_path / "e.onnx").exists()
    with pytest.raises(ExportError, match="batch of at least 2"):
        export_graph(
            Eigen(), torch.randn(1, 3, 3), tmp_path / "e.onnx", input_name="x", output_name="y"
        )
