"""`rescore export` on every generator family: the command writes its graphs, and the exported
mapping and fused generate-and-score pass equal torch eager within 1e-4 (norm-wise relative).

Every part is exported for one family (the parts besides mapping and fused do not depend on the
family: each family's synthesis graph is checked against torch in tests/models); the others
export the mapping and the fused pass only, which keeps the suite fast.

Each family is a tiny seeded checkpoint in its published layout, built here: genforce `.pth`
(StyleGAN at the published widths, 8 px; StyleGAN2, PGGAN at small widths), NVlabs network
pickles (the stylegan2-ada fixture pickle; a StyleGAN3 config R pickle written in NVlabs'
persistence layout), and a pytorch-pretrained-BigGAN directory (conditional: --class-index).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error
from typer.testing import CliRunner

from rescore.engine.cli import app
from rescore.models.biggan import BigGANConfig, save_random_biggan
from rescore.models.pggan import save_random_pggan
from rescore.models.registry import GeneratorOptions, ModelRef, build_generator, build_predictor
from rescore.models.stylegan import save_random_stylegan
from rescore.models.stylegan2 import StyleGAN2Config, default_channels, save_random_stylegan2
from rescore.models.stylegan3 import StyleGAN3Config, nvlabs_init_kwargs, random_stylegan3

ort = pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # nvlabs_builder
import nvlabs_builder  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
NVLABS_ADA_PKL = DATA / "fixtures" / "stylegan2" / "nvlabs_ada_skip32.pkl"
ALL_PARTS = "pggan_pth"  # the family whose export writes every part
TINY_BIGGAN = BigGANConfig(
    output_dim=32, z_dim=8, class_embed_dim=8, channel_width=4, num_classes=5,
    layers=((False, 16, 16), (True, 16, 8), (False, 8, 4), (True, 4, 2), (True, 2, 1)),
    attention_layer_position=2,
)  # fmt: skip


def _stylegan3_pickle(path: Path) -> Path:
    config = StyleGAN3Config(
        z_dim=8, c_dim=0, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
        num_layers=4,
    ).preset("r")  # fmt: skip
    state = random_stylegan3(config, seed=4).state_dict()
    path.write_bytes(nvlabs_builder.network_pickle(state, nvlabs_init_kwargs(config)))
    return path


# family -> (registry name, writer of the checkpoint into a directory, --class-index)
FAMILIES: dict[str, tuple[str, Callable[[Path], Path], int | None]] = {
    "stylegan_pth": ("stylegan", lambda d: save_random_stylegan(d / "g.pth", resolution=8), None),
    "stylegan2_pth": (
        "stylegan2",
        lambda d: save_random_stylegan2(
            d / "g.pth", StyleGAN2Config(16, 16, 16, (16,) * 9, default_channels(16, 128, 16))
        ),
        None,
    ),
    "stylegan2_pkl": ("stylegan2", lambda d: NVLABS_ADA_PKL, None),
    "stylegan3_pkl": ("stylegan3", lambda d: _stylegan3_pickle(d / "sg3.pkl"), None),
    "pggan_pth": (
        "pggan",
        lambda d: save_random_pggan(d / "g.pth", resolution=16, z_space_dim=8, channels=[16, 8, 4]),
        None,
    ),
    "biggan_dir": ("biggan", lambda d: save_random_biggan(d / "biggan", TINY_BIGGAN), 3),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_writes_every_graph_and_the_fused_pass_matches_torch(family, tmp_path):
    name, write, class_index = FAMILIES[family]
    path = write(tmp_path)
    out = tmp_path / "onnx"
    args = ["export", "-o", str(out), "--generator", f"{name}={path}", "-p", "color"]
    args += [] if class_index is None else ["--class-index", str(class_index)]
    parts = ["mapping", "synthesis", "predictor_0", "fused"]
    if family != ALL_PARTS:
        parts = ["mapping", "fused"]
        args += ["--part", "mapping", "--part", "fused"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in out.glob("*.onnx")) == sorted(parts)
    for part in parts:
        assert (out / f"{part}.onnx").is_file() and (out / f"{part}.json").is_file(), part
        assert str(out / f"{part}.onnx") in result.output

    generator = build_generator(ModelRef(name, path), GeneratorOptions(class_index=class_index))
    predictor = build_predictor(ModelRef("color"))
    seeds = torch.Generator().manual_seed(7)
    z = torch.randn(3, int(generator.z_dim), generator=seeds)  # batch 3: the dynamic axis
    with torch.no_grad():
        w = generator.map(z)  # [3, D]
        wp = w[:, None].repeat(1, int(generator.num_layers), 1)  # [3, L, D]
        wp = wp + 0.3 * torch.randn(wp.shape, generator=seeds)  # layers differ
        expected_w = w.numpy()
        expected = predictor(generator.synthesize(wp)).numpy()  # [3, S]
    for part, inputs, reference in (("mapping", z, expected_w), ("fused", wp, expected)):
        graph = str(out / f"{part}.onnx")
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        (actual,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
        assert actual.shape == reference.shape, part
        assert relative_error(actual, reference) < PARITY_RTOL, part
    assert np.isfinite(expected).all()
