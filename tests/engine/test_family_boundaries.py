"""Published boundary files through `rescore rescore`: HiGAN's `stylegan2_church/` directory and
InterFaceGAN's `pggan_celebahq_*` (Z) and `stylegan2_*_w` file names say which generator family
they were fitted on; they run on a generator of that family and are refused, in one line naming
both families and `--force-family`, on another (which `--force-family` then allows).

Generators: tiny seeded genforce `.pth` files (StyleGAN2 16 px, PGGAN 16 px), with the same
16-dim codes, so only the family (not a shape) tells the files apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.engine.cli import app
from rescore.models.pggan import save_random_pggan
from rescore.models.stylegan2 import StyleGAN2Config, default_channels, save_random_stylegan2

runner = CliRunner()
DIM = 16
# published file[:space] -> the family its name says
FILES = {
    "higan_stylegan2_church": ("stylegan2_church/brightness_boundary.npy", "stylegan2"),
    "interfacegan_pggan_z": ("pggan_celebahq_brightness_boundary.npy:z", "pggan"),
    "interfacegan_stylegan2_w": ("stylegan2_ffhq_brightness_w_boundary.npy", "stylegan2"),
}
OTHER = {"stylegan2": "pggan", "pggan": "stylegan2"}


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generators")
    config = StyleGAN2Config(DIM, DIM, DIM, (DIM,) * 9, default_channels(16, 128, 16))
    return {
        "stylegan2": save_random_stylegan2(root / "stylegan2_church16_generator.pth", config),
        "pggan": save_random_pggan(
            root / "pggan_bedroom16_generator.pth",
            resolution=16,
            z_space_dim=DIM,
            channels=[16, 8, 4],
        ),  # fmt: skip
    }


def _rescore(tmp_path: Path, family: str, path: Path, boundary: str, *extra: str):
    out = tmp_path / f"run-{family}"
    args = ["rescore", "-o", str(out), "--generator", f"{family}={path}", "-p", "color"]
    args += ["-b", boundary, "-n", "2", "--backend", "torch", "--device", "cpu", "-q", *extra]
    return runner.invoke(app, args), out


@pytest.mark.parametrize("case", list(FILES))
def test_published_boundaries_run_on_their_family_and_are_refused_on_another(
    case, generators, tmp_path
):
    relative, family = FILES[case]
    file, _, space = relative.partition(":")
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    normal = np.random.default_rng(0).normal(size=(1, DIM)).astype(np.float32)
    np.save(tmp_path / file, normal / np.linalg.norm(normal))
    boundary = str(tmp_path / relative)

    result, out = _rescore(tmp_path, family, generators[family], boundary)
    assert result.exit_code == 0, result.output
    rows = [row.split(",") for row in (out / "rescore.csv").read_text().splitlines()[1:]]
    name = Path(file).stem.removesuffix("_boundary")  # InterFaceGAN's names keep their prefix
    assert rows and {row[0] for row in rows} == {name}
    layers = {row[1] for row in rows}
    layer_wise = space != "z" and family != "pggan"  # StyleGAN2 16 px: 6 layers and "all"
    assert len(layers) == (7 if layer_wise else 1) and "all" in layers
    assert all(np.isfinite(float(row[3])) for row in rows)  # delta

    other = OTHER[family]
    refused, _ = _rescore(tmp_path, other, generators[other], boundary)
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rescore: error: "), refused.stderr
    assert f"'{other}' model" in lines[0] and f"{name} ({family})" in lines[0]
    assert "--force-family" in lines[0]
    if case == "higan_stylegan2_church":  # forced: a W boundary moves PGGAN's one code
        forced, _ = _rescore(tmp_path, other, generators[other], boundary, "--force-family")
        assert forced.exit_code == 0, forced.output
