"""`import rescore`: the documented, torch-free surface other applications use."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rescore.engine.cli import app

TOY = [
    "--generator",
    "toy_models:build_toy_generator",
    "-p",
    "toy_models:build_toy_predictor",
    "--backend",
    "torch",
]
ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"  # where toy_models lives


def _fresh_python(code: str, cwd: Path) -> dict:
    """Run `code` in a new interpreter outside the repository; it prints one JSON line."""
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_rescore_and_its_subpackages_without_torch(tmp_path):
    found = _fresh_python(
        """
        import json, sys
        import rescore
        import rescore.engine
        import rescore.engine.boundary, rescore.engine.readers, rescore.runs
        print(json.dumps({
            "torch": "torch" in sys.modules,
            "version": rescore.__version__,
            "all": sorted(rescore.__all__),
            "callable": all(callable(getattr(rescore, n)) for n in rescore.__all__
                            if n != "__version__"),
        }))
        """,
        tmp_path,
    )
    assert found["torch"] is False
    assert found["version"] and found["callable"]
    assert {"load_boundary", "load_boundaries", "open_samples", "open_rescore"} <= set(found["all"])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    sys.path.insert(0, str(ENGINE_TESTS))
    try:
        result = CliRunner().invoke(
            app,
            [
                "run",
                "-o",
                str(out),
                *TOY,
                "-n",
                "150",
                "--chosen-num",
                "30",
                "-s",
                "red",
                "-s",
                "green",
                "--rescore-num",
                "64",
                "-q",
            ],  # fmt: skip
        )
    finally:
        sys.path.remove(str(ENGINE_TESTS))
    assert result.exit_code == 0, result.output
    return out


def test_a_fresh_process_reads_a_finished_run_through_the_public_surface(finished_run, tmp_path):
    found = _fresh_python(
        f"""
        import json, sys
        import numpy as np
        import rescore

        run = {str(finished_run)!r}
        boundaries = rescore.load_boundaries(run + "/boundaries")
        table = rescore.read_delta_table(run)
        ranking = rescore.read_layer_ranking(run)
        summary = rescore.read_summary(run)
        samples = rescore.open_samples(run + "/samples.zarr")
        store = rescore.open_rescore(run + "/rescore.zarr")
        print(json.dumps({{
            "torch": "torch" in sys.modules,
            "boundaries": [[b.name, b.space, b.family, list(b.normal.shape)] for b in boundaries],
            "table_shape": list(table.delta.shape),
            "layers": list(table.layer_labels),
            "delta_red": table.delta_of("red", "red", "all"),
            "delta_red_layer0": table.delta_of("red", "red", 0),
            "k": table.k.tolist(),
            "peak_red": ranking["red"]["red"]["peak_layer"],
            "summary_peak_red": summary["boundaries"]["red"]["peak_layer"],
            "samples": samples.num_samples,
            "w_rows": samples.array("w")[:3].shape[0],
            "manipulated": list(store.array("manipulated").shape),
        }}))
        """,
        tmp_path,
    )
    assert found["torch"] is False
    assert found["boundaries"] == [
        ["green", "w", "toy_models:build_toy_generator", [1, 6]],
        ["red", "w", "toy_models:build_toy_generator", [1, 6]],
    ]
    assert found["table_shape"] == [2, 5, 4] and found["layers"] == ["all", "0", "1", "2", "3"]
    assert found["k"] == [64, 64] and found["samples"] == 150 and found["w_rows"] == 3
    assert found["manipulated"] == [64, 2, 5, 4]
    assert found["peak_red"] == found["summary_peak_red"] == 0  # red lives in layer 0

    csv_rows = (finished_run / "rescore.csv").read_text().splitlines()
    red_all = next(r for r in csv_rows if r.startswith("red,all,red,"))
    assert np.isclose(found["delta_red"], float(red_all.split(",")[3]))


def test_public_errors_are_rescore_errors(tmp_path):
    import rescore
    from rescore.models.errors import RescoreError

    with pytest.raises(RescoreError, match="summary.json not found"):
        rescore.read_summary(tmp_path)
    with pytest.raises(RescoreError, match="rescore.csv not found"):
        rescore.read_delta_table(tmp_path)
    with pytest.raises(RescoreError, match="not found"):
        rescore.load_boundary(tmp_path / "none.npy")
