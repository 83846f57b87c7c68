"""`python -m flmn_np.gpucheck` and the one-line refusals of the CuPy path without a GPU.
(The GPU part of gpucheck runs only on a GPU; here: its refusal, its loss comparison and its
report, and that train.py and bench end with one line.)"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flmn_np import gpucheck
from flmn_np.bench import bench_stack
from flmn_np.core.backend import cupy_status, get_xp

REPO = gpucheck.REPO
gpu_usable = cupy_status()[0]
no_gpu_only = pytest.mark.skipif(gpu_usable, reason="a GPU is usable here")


def run_cli(args, tmp_path):
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                               "OPENBLAS_NUM_THREADS": "1", "HOME": str(tmp_path)})


def assert_one_line(proc, *words):
    """Exit code 2, nothing but one line on stderr, no traceback, with each of `words`."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@no_gpu_only
def test_gpucheck_without_gpu_is_one_line(tmp_path):
    proc = run_cli(["-m", "flmn_np.gpucheck", "--out", str(tmp_path / "out")], tmp_path)
    assert_one_line(proc, "gpucheck: error: no usable GPU", "CuPy")
    assert not (tmp_path / "out").exists()


@no_gpu_only
@pytest.mark.parametrize("command", [
    ["train.py", "--out", "run", "--backend", "cupy"],
    ["-m", "flmn_np.bench", "--backend", "cupy", "--repeats", "1"],
])
def test_cupy_commands_without_gpu_are_one_line(command, tmp_path):
    if command[0] == "train.py":
        command = [str(REPO / "train.py"), *command[1:]]
    assert_one_line(run_cli(command, tmp_path), "--backend cupy was requested but")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_losses_agree_across_cpu_backends(dtype):
    """The comparison gpucheck runs between CuPy and NumPy, between NumPy and array_api_strict."""
    a = gpucheck.train_losses(np, "flmn", dtype, steps=3, batch_size=2)
    b = gpucheck.train_losses(get_xp("array_api_strict"), "flmn", dtype, steps=3, batch_size=2)
    assert a.shape == (3,) and np.all(np.isfinite(a)) and a[0] != a[-1]
    result = gpucheck.compare_losses(a, b, dtype)
    assert result["ok"] and result["max_abs_diff"] <= gpucheck.LOSS_TOL[dtype]


def test_compare_losses_fails_beyond_tolerance():
    a = np.array([1.6, 1.5, 1.4])
    assert gpucheck.compare_losses(a, a + 1e-10, "float64")["ok"]
    assert not gpucheck.compare_losses(a, a + np.array([0, 0, 2e-9]), "float64")["ok"]
    assert not gpucheck.compare_losses(a, a + 2e-3, "float32")["ok"]


def test_report_is_named_with_the_card(tmp_path):
    report = {"card": "NVIDIA H100 80GB HBM3", "cupy": "14.2.0", "cuda_runtime": 12090,
              "numpy": np.__version__, "host": "linux", "steps": 300,
              "tests": {"returncode": 0, "summary": "9 passed"},
              "training": [{"level": "step", "model": "flmn", "dtype": "float64",
                            "max_abs_diff": 3e-12, "tolerance": 1e-9, "ok": True,
                            "final_loss": [1.2, 1.2]}],
              "launches": [{"model": "mann", "reads": 4, "step": 9.1, "elementwise": 56.6,
                            "xp": 145.8}],
              "bench": [{"impl": "cupy step", "model": "flmn", "batch_size": 16,
                         "ms_per_step": 12.5, "episodes_per_s": 1280.0}],
              "torch_note": "torch is not installed", "seconds": {"benchmarks": 31.0}, "ok": True}
    json_path, md_path = gpucheck.write_report(report, tmp_path)
    assert json_path.name == "gpucheck_nvidia-h100-80gb-hbm3.json"
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    assert md.startswith("# gpucheck: NVIDIA H100 80GB HBM3")
    assert "| step | flmn | float64 | 3.00e-12 | 1e-09 |" in md
    assert "| cupy step | flmn | 16 | 12.50 |" in md and "| mann | 4 | 9.1 | 56.6 | 145.8 |" in md
    assert "Seconds: benchmarks 31" in md


def test_levels_are_set_and_restored(monkeypatch):
    from flmn_np.core import kernels
    monkeypatch.setenv("FLMN_FUSED", "elementwise")
    seen = {}
    for level in gpucheck.LEVEL_ENV:
        with gpucheck.fused_level(level):
            seen[level] = kernels.env_level()
    assert seen == {level: level for level in gpucheck.LEVEL_ENV}
    assert kernels.env_level() == "elementwise"


def test_launch_counts_cover_every_model_and_level():
    rows = gpucheck.launch_counts()
    assert [(r["model"], r["reads"]) for r in rows] == [("flmn", 1), ("mann", 1), ("mann", 4)]
    assert all(0 < r["step"] < r["elementwise"] < r["xp"] for r in rows)


def test_run_covers_every_level_in_one_command(monkeypatch, tmp_path):
    """gpucheck's run() end to end with the device parts stood in for (NumPy as the 'GPU'
    namespace, bench recording the level it ran at): every level is trained and compared,
    counted and benchmarked, and the report says how long each part took."""
    import types
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        __version__="14.2.0", cuda=types.SimpleNamespace(
            runtime=types.SimpleNamespace(runtimeGetVersion=lambda: 12090))))
    levels_benched = []

    def fake_bench(model, B, backend, repeats, count):
        levels_benched.append((os.environ.get("FLMN_FUSED"), model, B))
        return {"ms_per_step": 1.0, "episodes_per_s": float(B)}

    monkeypatch.setattr(gpucheck, "get_xp", lambda name: np)
    monkeypatch.setattr(gpucheck, "card_name", lambda: "Test Card")
    monkeypatch.setattr(gpucheck, "gpu_tests", lambda: {"returncode": 0, "summary": "1 passed"})
    monkeypatch.setattr(gpucheck, "bench", fake_bench)
    monkeypatch.setattr(gpucheck, "bench_torch_cuda", lambda *a: (None, "torch is not installed"))
    monkeypatch.setattr(gpucheck, "gpu_stack", lambda repeats: bench_stack(
        (1, 2), batch_size=2, repeats=repeats, warmup=0, count=False))
    monkeypatch.delenv("FLMN_FUSED", raising=False)
    args = types.SimpleNamespace(steps=2, repeats=1, out=str(tmp_path))
    assert gpucheck.run(args) == 0
    report = json.loads((tmp_path / "gpucheck_test-card.json").read_text())
    assert [(r["level"], r["model"], r["dtype"]) for r in report["training"]] == [
        (level, model, dtype) for model in ("flmn", "mann") for dtype in ("float64", "float32")
        for level in ("step", "elementwise", "xp")]
    assert all(r["ok"] and r["max_abs_diff"] == 0.0 for r in report["training"])   # NumPy twice
    assert {env for env, _, _ in levels_benched} == {None, "elementwise", "0"}
    assert len(levels_benched) == 3 * 2 * len(gpucheck.BATCH_SIZES) == len(report["bench"])
    assert [r["impl"] for r in report["bench"]][::6] == ["cupy step", "cupy elementwise",
                                                          "cupy xp"]
    assert len(report["launches"]) == 3 and set(report["seconds"]) == {
        "GPU-only tests", "training 2 steps, each level and NumPy", "launch counts", "benchmarks",
        "a stack of models"}
    assert [r["S"] for r in report["stack"]["stacks"]] == [1, 2]
    assert "A stack of S models" in (tmp_path / "gpucheck_test-card.md").read_text()
    assert "FLMN_FUSED" not in os.environ
