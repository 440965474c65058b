"""One thread budget: torch, numba and ONNX Runtime follow one setting, and the first numba
parallel kernel does not raise torch's thread count behind the user's OMP_NUM_THREADS."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import numpy as np
import torch
from rescore.export.threads import apply_thread_budget, thread_budget
from rescore.kernels.manipulate import manipulate

budget = apply_thread_budget(None if sys.argv[1] == "default" else int(sys.argv[1]))
before = torch.get_num_threads()
codes = np.zeros((64, 4, 8), np.float32)
manipulate(codes, np.ones((2, 4, 8), np.float32), np.eye(4, dtype=bool), 1.0, impl="numba")
import numba
print(json.dumps({"budget": budget, "ort": thread_budget(), "torch_before": before,
                  "torch_after": torch.get_num_threads(), "numba": numba.get_num_threads()}))
"""


def _probe(setting: str, omp: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    result = subprocess.run(
        [sys.executable, "-c", PROBE, setting], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting, omp, expected", [("default", "1", 1)])
def test_torch_numba_and_onnxruntime_follow_one_budget(setting, omp, expected):
    threads = _probe(setting, omp)
    assert threads == {
        "budget": expected,
        "ort": expected,
        "torch_before": expected,
        "torch_after": expected,  # the numba kernel did not raise it
        "numba": expected,
    }


def test_default_budget_is_the_cpus_this_process_may_use():
    from rescore.export.threads import available_cpus

    threads = _probe("default", None)
    assert threads["budget"] == threads["ort"] == threads["torch_after"] == available_cpus()
    assert threads["numba"] == available_cpus()


def test_the_cli_applies_the_budget_once_at_startup(tmp_path, monkeypatch):
    import torch
    from typer.testing import CliRunner

    from rescore.engine.cli import app
    from rescore.export import threads

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setattr(threads, "_requested", None)
    try:
        result = CliRunner().invoke(app, ["--threads", "0", "report", "-o", str(tmp_path)])
        assert result.exit_code == 2 and "--threads must be at least 1" in result.output
        result = CliRunner().invoke(app, ["--threads", "1", "report", "-o", str(tmp_path)])
        assert threads.thread_budget() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
