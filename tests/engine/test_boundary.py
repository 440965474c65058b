import json
import os

import numpy as np
import pytest

from rescore.engine.boundary import Boundary, load_boundaries, load_boundary, save_boundary
from rescore.engine.errors import BoundaryError
from rescore.export.session import LatentGeometry


def _geometry(dim=4, layers=3):
    return LatentGeometry(
        dim, dim, layers, np.zeros(dim, np.float32), np.array([0.7, 1.0, 1.0][:layers], np.float32)
    )


def test_round_trip_keeps_higan_layout(tmp_path):
    normal = np.array([[0.6, 0.8, 0.0, 0.0]], np.float32)
    path = save_boundary(tmp_path, Boundary("indoor lighting/x", normal, {"accuracy": 0.9}))
    raw = np.load(path, allow_pickle=False)  # what HiGAN / InterFaceGAN read
    assert raw.shape == (1, 4) and raw.dtype == np.float32 and np.allclose(raw, normal)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["semantic"] == "indoor lighting/x" and sidecar["space"] == "w"
    loaded = load_boundary(path)
    assert loaded.name == "indoor lighting/x" and loaded.metadata["accuracy"] == 0.9
    assert np.array_equal(loaded.normal, normal)


def test_reads_higan_plain_and_pickled_dict_files(tmp_path):
    normal = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)
    normal /= np.linalg.norm(normal)
    np.save(tmp_path / "wood_boundary.npy", normal)
    np.save(
        tmp_path / "carpet_boundary.npy",
        {"boundary": normal, "accuracy": np.float64(0.93), "name": "carpet"},
        allow_pickle=True,
    )
    plain, pickled = (
        load_boundary(tmp_path / "wood_boundary.npy"),
        load_boundary(tmp_path / "carpet_boundary.npy"),
    )
    assert plain.name == "wood" and pickled.name == "carpet"
    assert np.allclose(plain.normal, normal) and np.allclose(pickled.normal, normal)
    assert [b.name for b in load_boundaries([tmp_path])] == ["carpet", "wood"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(
        tmp_path / "evil.npy", np.array({"boundary": _Exploit()}, dtype=object), allow_pickle=True
    )
    with pytest.raises(BoundaryError, match="never run code"):
        load_boundary(tmp_path / "evil.npy")
    assert not (tmp_path / "PWNED").exists()


def test_w_directions_carry_truncation_strength_and_wp_do_not():
    geometry = _geometry()
    w_boundary = Boundary("a", np.array([[1.0, 0, 0, 0]], np.float32))
    assert np.allclose(w_boundary.directions(geometry)[:, 0], [0.7, 1.0, 1.0])
    per_layer = np.eye(4, dtype=np.float32)[:3][None]  # (1, 3, 4)
    assert np.allclose(Boundary("b", per_layer).directions(geometry), per_layer[0])


def test_mismatched_dimension_or_layers_are_refused():
    with pytest.raises(BoundaryError, match="dimension 5"):
        Boundary("a", np.ones((1, 5), np.float32)).directions(_geometry())
    with pytest.raises(BoundaryError, match="2 layers"):
        Boundary("a", np.ones((1, 2, 4), np.float32)).directions(_geometry())


def test_bad_files(tmp_path):
    np.save(tmp_path / "bad.npy", np.ones((2, 3, 4, 5), np.float32))
    with pytest.raises(BoundaryError, match="shape"):
        load_boundary(tmp_path / "bad.npy")
    with pytest.raises(BoundaryError, match="not found"):
        load_boundary(tmp_path / "missing.npy")
    (tmp_path / "sub").mkdir()
    with pytest.raises(BoundaryError, match="no boundary"):
        load_boundaries([tmp_path / "sub"])
