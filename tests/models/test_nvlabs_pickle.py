"""NVlabs network pickles: read without importing or running anything from the file.

`nvlabs_ada_skip32.pkl` was written by NVlabs' own persistence code (stylegan2-ada-pytorch,
`pickle.dump({'G_ema': G, ...})`, module source text replaced by a placeholder); the builder
writes pickles of the same structure from seeded weights.
"""

import io
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from nvlabs_builder import (
    EasyDict,
    Persistent,
    dumps,
    module_state,
    network_pickle,
    seeded_state,
    stylegan2_shapes,
)

from rescore.models import nvlabs_pickle
from rescore.models.errors import CheckpointError, RescoreError
from rescore.models.nvlabs_pickle import NvlabsPickleError, PersistentRecord
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures" / "stylegan2"
REAL = FIXTURES / "nvlabs_ada_skip32.pkl"
SHAPES = dict(z_dim=16, w_dim=16, resolution=32, channel_base=256, channel_max=32, mapping_layers=4)
INIT_KWARGS = {
    "z_dim": 16, "c_dim": 0, "w_dim": 16, "img_resolution": 32, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 4},
    "synthesis_kwargs": {"channel_base": 256, "channel_max": 32, "num_fp16_res": 0,
                         "conv_clamp": None, "architecture": "skip"},
}  # fmt: skip


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text, text
    return text


def test_real_pickle_gives_records_init_kwargs_and_state_dict():
    record = nvlabs_pickle.generator_record(nvlabs_pickle.read_network_pickle(REAL), REAL)
    assert isinstance(record, PersistentRecord) and record.class_name == "Generator"
    assert isinstance(record.module_src, str)
    assert record.init_kwargs() == INIT_KWARGS
    assert nvlabs_pickle.generator_family(record) == "stylegan2"
    state = record.state_dict()
    expected = stylegan2_shapes(c_dim=0, architecture="skip", **SHAPES)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected  # the builder's layout is real
    weights, _ = seeded_state(expected, 11)
    for key, value in weights.items():
        assert torch.equal(state[key], value), key


def test_real_pickle_runs_like_nvlabs_reference():
    expected = np.load(FIXTURES / "nvlabs_ada32.npz")
    model = build_generator(ModelRef("stylegan2", REAL), GeneratorOptions(truncation_psi=0.7))
    assert model.family == "stylegan2"
    assert model.truncation_coefficients().tolist() == pytest.approx([0.7] * 8)
    with torch.no_grad():
        w = model.map(torch.from_numpy(expected["skip_z"]))
        images = model.synthesize(torch.from_numpy(expected["skip_wp"]))
    for got, name in ((w, "skip_w"), (images, "skip_images")):
        ref = expected[name]
        assert np.abs(got.numpy() - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize("protocol", [3, 4])
def test_builder_pickles_load_through_the_registry(tmp_path, protocol):
    state, _ = seeded_state(stylegan2_shapes(c_dim=0, architecture="skip", **SHAPES), 11)
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(network_pickle(state, INIT_KWARGS, protocol=protocol))
    assert nvlabs_pickle.is_nvlabs_pickle(path)
    built = build_generator(ModelRef("stylegan2", path))
    real = build_generator(ModelRef("stylegan2", REAL))
    wp = torch.randn(2, 8, 16)
    with torch.no_grad():
        assert torch.equal(built.synthesize(wp), real.synthesize(wp))
    assert built.truncation_coefficients().tolist() == [1.0] * 8  # NVlabs' default psi 1


def test_conditional_pickle_needs_a_class(tmp_path):
    state, _ = seeded_state(stylegan2_shapes(c_dim=4, architecture="skip", **SHAPES), 1)
    path = tmp_path / "cond.pkl"
    path.write_bytes(network_pickle(state, {**INIT_KWARGS, "c_dim": 4}))
    with pytest.raises(RescoreError, match="--class-index") as caught:
        build_generator(ModelRef("stylegan2", path))
    _one_line(caught.value)
    one, two = (
        build_generator(ModelRef("stylegan2", path), GeneratorOptions(class_index=i))
        for i in (1, 2)
    )
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert not torch.allclose(one.map(z), two.map(z))


def test_stylegan3_records_dispatch_lazily_to_its_module(tmp_path, monkeypatch):
    synthesis = Persistent("SynthesisNetwork", module_state({}, {"input": Persistent(
        "SynthesisInput", module_state({"freqs": torch.ones(4, 2)}, {}))}))  # fmt: skip
    generator = Persistent(
        "Generator", module_state({}, {"synthesis": synthesis}, EasyDict(z_dim=4, c_dim=0))
    )
    path = tmp_path / "sg3.pkl"
    path.write_bytes(dumps({"G_ema": generator}))
    with pytest.raises(RescoreError, match="stylegan3=PATH"):
        build_generator(ModelRef("stylegan2", path))
    calls = []
    fake = types.ModuleType("rescore.models.stylegan3")
    fake.from_nvlabs = lambda kwargs, state, options: calls.append((kwargs, state, options))
    monkeypatch.setitem(sys.modules, "rescore.models.stylegan3", fake)
    nvlabs_pickle.load_generator(path, GeneratorOptions(class_index=3), expect="stylegan3")
    ((kwargs, state, options),) = calls
    assert kwargs == {"z_dim": 4, "c_dim": 0} and options.class_index == 3
    assert list(state) == ["synthesis.input.freqs"]
    monkeypatch.setitem(sys.modules, "rescore.models.stylegan3", None)  # absent module
    with pytest.raises(NvlabsPickleError, match="no stylegan3 generator module"):
        nvlabs_pickle.load_generator(path, GeneratorOptions())


class _System:
    """Pickles as os.system(command): what a malicious pickle does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_storage_bytes(marker: Path) -> bytes:
    """A `_load_from_bytes` payload whose inner pickle calls os.system."""

    class Storage:
        def __reduce__(self):
            inner = pickle.dumps(_System(f"touch {marker}"), protocol=2)
            return (torch.storage._load_from_bytes, (inner,))  # pickled by name, not called

    return Storage()


@pytest.mark.parametrize("payload", ["reduce", "module_src", "storage", "module_src_valid"])
def test_malicious_pickles_never_run(tmp_path, payload):
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('ran')\n"
    if payload == "reduce":
        decoy = Persistent("Generator", module_state({}, {}))  # so the file reads as NVlabs'
        data = dumps({"G": decoy, "G_ema": _System(f"touch {marker}")})
    elif payload == "module_src":
        data = dumps({"G_ema": Persistent("Generator", module_state({}, {}), module_src=source)})
    elif payload == "storage":
        data = dumps(
            {"G_ema": Persistent("Generator", {"_parameters": {"w": _evil_storage_bytes(marker)}})}
        )
    else:  # a loadable generator whose embedded source would write the marker if executed
        state, _ = seeded_state(stylegan2_shapes(c_dim=0, architecture="skip", **SHAPES), 0)
        data = network_pickle(state, INIT_KWARGS, module_src=source)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    if payload == "module_src_valid":
        build_generator(ModelRef("stylegan2", path))
    else:
        with pytest.raises(CheckpointError) as caught:
            build_generator(ModelRef("stylegan2", path))
        line = _one_line(caught.value)
        if payload == "reduce":
            assert "posix.system" in line or "nt.system" in line
    assert not marker.exists()


def test_other_pickles_are_refused_in_one_line(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(dumps({"G_ema": Persistent("Generator", module_state({}, {}))})[:-20])
    with pytest.raises(NvlabsPickleError) as caught:
        nvlabs_pickle.read_network_pickle(path)
    assert "truncated" in _one_line(caught.value)
    path.write_bytes(dumps({"D": Persistent("Discriminator", module_state({}, {}))}))
    with pytest.raises(NvlabsPickleError, match="no G_ema"):
        build_generator(ModelRef("stylegan2", path))
    path.write_bytes(dumps({"G_ema": Persistent("Generator", {"_modules": [1, 2]})}))
    with pytest.raises(NvlabsPickleError, match="_modules is a list") as caught:
        build_generator(ModelRef("stylegan2", path))
    _one_line(caught.value)
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buffer)
    path.write_bytes(buffer.getvalue())
    assert not nvlabs_pickle.is_nvlabs_pickle(path)
