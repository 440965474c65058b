"""The command line: help with examples, one-line errors with exit code 2, nothing half-written."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rescore.engine.cli import app

runner = CliRunner()
TOY = ["--generator", "toy_models:build_toy_generator", "-p", "toy_models:build_toy_predictor"]


def _fails(args, match):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rescore: error: "), result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        "sample",
        "fit",
        "rescore",
        "report",
        "run",
        "demo",
        "export",
        "grid",
        "condition",
        "project",
        "check",
    ],
)
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_unknown_names_suggest_close_ones(tmp_path):
    line = _fails(
        ["sample", "-o", str(tmp_path / "r"), "--generator", "stylgan", "-p", "color"],
        "unknown generator 'stylgan'",
    )
    assert "did you mean stylegan" in line
    _fails(
        ["sample", "-o", str(tmp_path / "r"), "--generator", "synthetic", "-p", "colour"],
        "did you mean color",
    )


def test_missing_and_truncated_checkpoints(tmp_path):
    _fails(
        [
            "sample",
            "-o",
            str(tmp_path / "r"),
            "--generator",
            f"stylegan={tmp_path / 'none.pth'}",
            "-p",
            "color",
        ],
        "not found",
    )
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 definitely not a whole checkpoint")
    _fails(
        ["sample", "-o", str(tmp_path / "r"), "--generator", f"stylegan={broken}", "-p", "color"],
        "truncated or corrupt",
    )
    assert not (tmp_path / "r" / "samples.zarr").exists()


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(["sample", "-o", str(blocker / "run"), *TOY, "-n", "10"], "cannot write")


def test_store_of_another_configuration_is_refused(tmp_path):
    out = str(tmp_path / "r")
    ok = runner.invoke(app, ["sample", "-o", out, *TOY, "-n", "20", "-q"])
    assert ok.exit_code == 0, ok.output
    _fails(
        ["sample", "-o", out, *TOY, "-n", "20", "--seed", "1", "-q"], "another run configuration"
    )


def test_fit_errors(tmp_path):
    out = str(tmp_path / "r")
    assert runner.invoke(app, ["sample", "-o", out, *TOY, "-n", "40", "-q"]).exit_code == 0
    _fails(["fit", "-o", out, "-s", "redd", "-q"], "did you mean red")
    _fails(["fit", "-o", out, "--chosen-num", "30", "-q"], "half the store")
    _fails(["fit", "-o", out, "-s", "constant", "--chosen-num", "10", "-q"], "one class")
    _fails(["fit", "-o", str(tmp_path / "nothing"), "-q"], "not found")


def test_console_script_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rescore.engine.cli", "fit", "-o", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("rescore: error:")
    assert "Traceback" not in result.stderr


def test_boundary_of_another_model_is_refused(tmp_path):
    import numpy as np

    out = str(tmp_path / "r")
    assert runner.invoke(app, ["sample", "-o", out, *TOY, "-n", "40", "-q"]).exit_code == 0
    np.save(tmp_path / "wide_boundary.npy", np.ones((1, 7), np.float32) / np.sqrt(7))
    _fails(
        ["rescore", "-o", out, *TOY, "-b", str(tmp_path / "wide_boundary.npy"), "-n", "4", "-q"],
        "dimension 7",
    )
    np.save(tmp_path / "layers_boundary.npy", np.ones((1, 9, 6), np.float32) / np.sqrt(6))
    _fails(
        ["rescore", "-o", out, *TOY, "-b", str(tmp_path / "layers_boundary.npy"), "-n", "4", "-q"],
        "9 layers",
    )
    assert not (tmp_path / "r" / "rescore.zarr").exists()


def test_missing_gpu_backend_is_one_clear_line(tmp_path):
    line = _fails(
        ["sample", "-o", str(tmp_path / "r"), *TOY, "-n", "10", "--backend", "tensorrt"], "tensorrt"
    )
    assert "pip install" in line or "GPU" in line
    _fails(
        [
            "sample",
            "-o",
            str(tmp_path / "r"),
            *TOY,
            "-n",
            "10",
            "--backend",
            "torch",
            "--precision",
            "fp16",
        ],
        "fp32 only",
    )
    assert not (tmp_path / "r" / "samples.zarr").exists()


def test_export_then_sample_from_the_exported_files(tmp_path):
    import zarr

    onnx_dir = tmp_path / "onnx"
    result = runner.invoke(app, ["export", "-o", str(onnx_dir), *TOY])
    assert result.exit_code == 0, result.output
    assert (onnx_dir / "fused.onnx").is_file() and (onnx_dir / "fused.json").is_file()
    out = tmp_path / "r"
    result = runner.invoke(
        app,
        [
            "sample",
            "-o",
            str(out),
            *TOY,
            "-n",
            "30",
            "--backend",
            "onnxruntime",
            "--onnx-dir",
            str(onnx_dir),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    onnx_store = zarr.open_group(out / "samples.zarr", mode="r")
    assert onnx_store.attrs["rescore"]["identity"]["backend"] == "onnxruntime"
    torch_out = tmp_path / "t"
    assert (
        runner.invoke(
            app, ["sample", "-o", str(torch_out), *TOY, "-n", "30", "--backend", "torch", "-q"]
        ).exit_code
        == 0
    )
    torch_store = zarr.open_group(torch_out / "samples.zarr", mode="r")
    import numpy as np

    assert np.allclose(onnx_store["scores"][:], torch_store["scores"][:], rtol=1e-4, atol=1e-5)


def test_demo_quick_runs_end_to_end(tmp_path):
    """README command 1 runs `rescore demo`; its quick form must keep working (every step)."""
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    for name in ("summary.json", "rescore.csv", "heatmap.png", "names.csv", "names.png"):
        assert (out / name).is_file(), name
    assert "sefa_0" in (out / "names.csv").read_text()
