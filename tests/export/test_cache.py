"""Cache keys and invalidation: model digests, exported-graph directories, TensorRT engine cache.

Engine keys are plain data, so everything here runs without a GPU (fake key fields, fake build).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error, tiny_stylegan

from rescore.export import graphs as graphs_module
from rescore.export.cache import CorruptCacheError, EngineCache, EngineKey, model_digest
from rescore.export.graphs import GraphFiles
from rescore.export.onnx import ExportError
from rescore.export.ort import OrtSession
from rescore.export.session import TorchSession
from rescore.models.color import ColorPredictor
from rescore.models.synthetic import build_synthetic, build_synthetic_predictor

KEY = EngineKey(
    onnx_sha256="ab" * 32,
    tensorrt_version="10.9.0",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability=(9, 0),
    precision="fp16",
    profile=(1, 32, 32),
)


def test_model_digest_follows_weights_plain_attributes_and_predictor_order():
    generator, predictor = tiny_stylegan(), ColorPredictor()
    digest = model_digest(generator, [predictor])
    assert model_digest(tiny_stylegan(), [ColorPredictor()]) == digest  # rebuilt, same values
    nudged = tiny_stylegan()
    with torch.no_grad():
        weight = nudged.synthesis.layer1.conv.weight
        weight[0, 0, 0, 0] = torch.nextafter(weight[0, 0, 0, 0], torch.tensor(float("inf")))
    assert model_digest(nudged, [predictor]) != digest
    assert model_digest(tiny_stylegan(seed=1), [predictor]) != digest
    soft = build_synthetic(resolution=32)
    sharp = build_synthetic(resolution=32)
    sharp.edge_softness = 0.3  # a plain attribute, outside the state dict
    synthetic_predictor = build_synthetic_predictor()
    assert model_digest(soft, [synthetic_predictor]) != model_digest(sharp, [synthetic_predictor])
    assert model_digest(generator, [predictor, synthetic_predictor]) != model_digest(
        generator, [synthetic_predictor, predictor]
    )


def test_every_engine_key_field_changes_the_cache_entry():
    variants = [
        dataclasses.replace(KEY, onnx_sha256="cd" * 32),
        dataclasses.replace(KEY, tensorrt_version="10.10.0"),
        dataclasses.replace(KEY, gpu_name="NVIDIA A100-SXM4-80GB"),
        dataclasses.replace(KEY, compute_capability=(8, 0)),
        dataclasses.replace(KEY, precision="bf16"),
        dataclasses.replace(KEY, profile=(1, 32, 64)),
    ]
    digests = {KEY.digest(), *(v.digest() for v in variants)}
    assert len(digests) == len(variants) + 1
    assert dataclasses.replace(KEY).digest() == KEY.digest()


def test_engines_are_built_once_reused_and_rebuilt_for_another_key(tmp_path):
    cache, builds = EngineCache(tmp_path), []

    def build(tag: bytes):
        return lambda: builds.append(tag) or b"engine-" + tag

    assert cache.get_or_build(KEY, build(b"h100")) == b"engine-h100"
    assert cache.get_or_build(KEY, build(b"again")) == b"engine-h100"  # loaded, not rebuilt
    other_gpu = dataclasses.replace(KEY, gpu_name="NVIDIA L4", compute_capability=(8, 9))
    assert cache.get_or_build(other_gpu, build(b"l4")) == b"engine-l4"
    assert builds == [b"h100", b"l4"]
    assert cache.load(KEY) == b"engine-h100"


def test_a_foreign_engine_under_the_right_name_is_rebuilt_not_loaded(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"built-here")
    engine, record = cache.paths(KEY)
    meta = json.loads(record.read_text())
    meta["key"]["tensorrt_version"] = "8.6.1"  # e.g. a cache directory copied from elsewhere
    record.write_text(json.dumps(meta))
    assert cache.load(KEY) is None
    assert cache.get_or_build(KEY, lambda: b"rebuilt") == b"rebuilt"
    assert cache.load(KEY) == b"rebuilt"


def test_a_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"0123456789")
    engine, record = cache.paths(KEY)
    engine.write_bytes(b"01234")  # truncated
    with pytest.raises(CorruptCacheError, match="truncated or altered"):
        cache.load(KEY)
    assert cache.get_or_build(KEY, lambda: b"rebuilt") == b"rebuilt"
    assert cache.load(KEY) == b"rebuilt"
    record.write_text("{not json")
    assert cache.get_or_build(KEY, lambda: b"again") == b"again"
    record.write_text("{not json")
    with pytest.raises(CorruptCacheError, match="unreadable"):
        cache.load(KEY)
    record.write_text(json.dumps({"format": "something-else", "key": {}, "engine_sha256": ""}))
    with pytest.raises(CorruptCacheError, match="not a rescore engine cache record"):
        cache.load(KEY)
    engine.unlink()
    record.unlink()
    engine.write_bytes(b"half-written, no record")  # an interrupted store: rebuilt
    assert cache.get_or_build(KEY, lambda: b"fresh") == b"fresh"


@pytest.fixture(scope="module")
def stylegan_cache(tmp_path_factory):
    """A graph cache directory shared by the tests of this module (exports are slow)."""
    return tmp_path_factory.mktemp("graph-cache")


def test_graph_cache_exports_once_then_reuses_and_checks_the_files(
    stylegan_color, stylegan_cache, tmp_path, monkeypatch
):
    generator, predictor = stylegan_color
    files = GraphFiles.cached(generator, [predictor], stylegan_cache)
    fused = files.graph("fused")
    assert fused.path.parent.parent == stylegan_cache / "onnx"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(graphs_module, "export_part", no_export)
    again = GraphFiles.cached(tiny_stylegan(), [ColorPredictor()], stylegan_cache)
    assert again.graph("fused").path == fused.path
    other = GraphFiles.cached(tiny_stylegan(seed=3), [ColorPredictor()], stylegan_cache)
    assert other.directory != files.directory  # other weights: another key

    shutil.copytree(stylegan_cache, tmp_path, dirs_exist_ok=True)
    copy = GraphFiles.cached(generator, [predictor], tmp_path)
    path = copy.directory / "fused.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    monkeypatch.undo()  # a corrupt cache entry is simply exported again
    rebuilt = copy.graph("fused")
    assert rebuilt.path == path and bytes(blob) != path.read_bytes()


def test_given_graphs_must_come_from_the_same_models(synthetic, synthetic_export, stylegan_color):
    generator, predictor = synthetic
    given = GraphFiles.given(synthetic_export.directory, generator, [predictor])
    assert given.graph("fused").path == synthetic_export.graphs["fused"].path
    other_generator, color = stylegan_color
    with pytest.raises(ExportError, match="other weights"):
        GraphFiles.given(synthetic_export.directory, generator, [color]).graph("fused")
    with pytest.raises(ExportError, match="does not exist"):
        GraphFiles.given(synthetic_export.directory / "missing", generator, [predictor])


def test_cached_tiny_stylegan_session_matches_torch(stylegan_color, stylegan_cache):
    generator, predictor = stylegan_color
    reference = TorchSession(generator, [predictor], "cpu")
    files = GraphFiles.cached(generator, [predictor], stylegan_cache)
    with OrtSession(
        files, reference.geometry, reference.semantic_names, device=torch.device("cpu")
    ) as session:
        z = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
        w = session.map(z)
        assert relative_error(w, reference.map(z)) < PARITY_RTOL
        wp = session.geometry.truncate(w)
        assert relative_error(session.score(wp), reference.score(wp)) < PARITY_RTOL
        # uint8 pictures: identical except where a float pixel sits on a rounding edge
        difference = np.abs(session.render(wp).astype(int) - reference.render(wp).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
