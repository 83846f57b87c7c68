"""`python -m flmn_np.gpucheck` and the one-line refusals of the CuPy path without a GPU.
(The GPU part of gpucheck runs only on a GPU; here: its refusal, its loss comparison and its
report, and that train.py and bench end with one line.)"""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from flmn_np import gpucheck
from flmn_np.bench import bench_stack
from flmn_np.core.models import ModelConfig
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
              "numpy": np.__version__, "host": "linux", "quick": False, "steps": 300,
              "parts": [{"name": "benchmarks at B = 16, 64, 256", "budget_s": 80, "seconds": 31.0,
                         "status": "done"},
                        {"name": "GPU-only tests", "budget_s": 120, "seconds": 120.0,
                         "status": "cut"}],
              "tests": {"returncode": 0, "summary": "9 passed"},
              "training": [{"part": "full", "level": "step", "model": "flmn", "dtype": "float64",
                            "steps": 300, "max_abs_diff": 3e-12, "tolerance": 1e-9, "ok": True,
                            "final_loss": [1.2, 1.2]}],
              "launches": [{"model": "mann", "reads": 4, "step": 9.1, "elementwise": 56.6,
                            "xp": 145.8}],
              "bench": [{"impl": "cupy step", "model": "flmn", "batch_size": 16,
                         "ms_per_step": 12.5, "episodes_per_s": 1280.0}],
              "torch_note": "torch is not installed", "ok": True}
    json_path, md_path = gpucheck.write_report(report, tmp_path)
    assert json_path.name == "gpucheck_nvidia-h100-80gb-hbm3.json"
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    assert md.startswith("# gpucheck: NVIDIA H100 80GB HBM3")
    assert "| full | step | flmn | float64 | 300 | 3.00e-12 | 1e-09 |" in md
    assert "| cupy step | flmn | 16 | 12.50 |" in md and "| mann | 4 | 9.1 | 56.6 | 145.8 |" in md
    assert "| benchmarks at B = 16, 64, 256 | 80 | 31.0 | done |" in md
    assert "| GPU-only tests | 120 | 120.0 | cut |" in md


def test_levels_are_set_and_restored(monkeypatch):
    from flmn_np.core import levels
    monkeypatch.setattr(gpucheck, "DEVICE_BACKEND", "numpy")
    seen = {}
    for level in gpucheck.LEVEL_ENV:
        with gpucheck.fused_level(level):
            seen[level] = levels.name(np.zeros(1))
    assert seen == {level: level for level in gpucheck.LEVEL_ENV}
    assert levels.name(np.zeros(1)) == "xp"


def test_launch_counts_cover_every_model_and_level():
    rows = gpucheck.launch_counts()
    assert [(r["model"], r["reads"]) for r in rows] == [("flmn", 1), ("mann", 1), ("mann", 4)]
    assert all(0 < r["step"] < r["elementwise"] < r["xp"] for r in rows)


def stand_in_device(monkeypatch):
    """gpucheck's device stood in for: NumPy as the 'GPU' namespace, whose level gpucheck sets
    as it sets CuPy's, every kernel of every level run from its source on the CPU
    (g++, tests/kernel_harness.py), the training comparisons at tiny sizes, the GPU-only tests,
    bench and PyTorch answered at once. -> the list of (level, model, B) bench was asked."""
    from flmn_np.core import backend, kernels, levels, step_kernels
    from flmn_np.gradcheck import TINY
    from kernel_harness import launch_cpp, launch_raw_cpp

    def cpp_kernel(spec):
        n_in = len(spec.in_params.split(","))
        return lambda *arrays: launch_cpp(spec, arrays[:n_in], arrays[n_in:])

    monkeypatch.setattr(gpucheck, "DEVICE_BACKEND", "numpy")
    monkeypatch.setattr(kernels, "cupy_kernel", cpp_kernel)
    monkeypatch.setattr(step_kernels, "cupy_function",
                        lambda spec, dtype: lambda n, args: launch_raw_cpp(spec, n, args))
    monkeypatch.setattr(backend, "cupy_status", lambda: (True, "CuPy on 1 GPU(s)"))
    def start(name):        # as backend._start_cupy: every kernel built and launched once
        kernels.build_all(np, launch=launch_cpp)
        step_kernels.build_all(np, launch=launch_raw_cpp)
        return np

    monkeypatch.setattr(gpucheck, "get_xp", start)
    monkeypatch.setattr(gpucheck, "device_info", lambda: {"card": "Test Card", "cupy": "14.2.0",
                                                          "cuda_runtime": 12090})
    monkeypatch.setattr(gpucheck, "training_cfg",
                        lambda model: ModelConfig(model=model, slots=6, **TINY))
    monkeypatch.setattr(gpucheck, "TRAINING_BATCH", 2)
    monkeypatch.setattr(gpucheck, "gpu_tests", lambda timeout: {"returncode": 0,
                                                                "summary": "1 passed"})
    benched = []

    def fake_bench(model, B, backend, repeats, count):
        benched.append((levels.name(np.zeros(1)), model, B))
        return {"ms_per_step": 1.0, "episodes_per_s": float(B)}

    monkeypatch.setattr(gpucheck, "bench", fake_bench)
    monkeypatch.setattr(gpucheck, "bench_torch_cuda", lambda *a: (None, "torch is not installed"))
    monkeypatch.setattr(gpucheck, "gpu_stack", lambda repeats: bench_stack(
        (1, 2), batch_size=2, repeats=repeats, warmup=0, count=False))
    monkeypatch.delenv("FLMN_FUSED", raising=False)
    return benched


@pytest.mark.parametrize("quick", [True, False])
def test_the_plan_runs_within_its_budgets_with_the_device_stood_in(monkeypatch, tmp_path, quick):
    """The whole plan, quick and full, end to end on the stood-in device: the budgets add up to
    at most 2 and 8 minutes, every part finishes inside its own budget, every level is trained
    and compared (the kernels' CPU build against NumPy), the stack's views hold, and the report
    gives each part's budget and seconds."""
    benched = stand_in_device(monkeypatch)
    parts = gpucheck.plan(quick, steps=3)
    limit = gpucheck.QUICK_LIMIT_S if quick else gpucheck.FULL_LIMIT_S
    assert sum(p.budget_s for p in parts) <= limit == (120 if quick else 480)
    args = types.SimpleNamespace(quick=quick, steps=3, repeats=1, out=str(tmp_path))
    assert gpucheck.run(args) == 0
    report = json.loads((tmp_path / "gpucheck_test-card.json").read_text())
    assert [r["name"] for r in report["parts"]] == [p.name for p in parts]
    for r in report["parts"]:
        assert r["status"] == "done" and 0 <= r["seconds"] <= r["budget_s"], r
    assert [c["ok"] for c in report["checks"]] == [True, True]
    runs = {(r["part"], r["level"], r["model"], r["dtype"]) for r in report["training"]}
    assert runs >= {("quick", level, model, dtype) for level in ("step", "elementwise", "xp")
                    for model in ("flmn", "mann") for dtype in ("float64", "float32")}
    assert all(r["ok"] and 1 <= r["steps"] <= 20 for r in report["training"])
    if not quick:
        assert {level for level, _, _ in benched} == {"step", "elementwise", "xp"}
        assert len(report["launches"]) == 3 and report["tests"]["returncode"] == 0
        assert [r["G"] for r in report["stack"]["stacks"]] == [1, 2]
        assert {r["steps"] for r in report["training"] if r["part"] == "full"} <= {1, 2, 3}
    assert "FLMN_FUSED" not in os.environ


def test_a_part_past_its_budget_is_cut_and_the_plan_goes_on(monkeypatch, tmp_path):
    import time as time_
    check = gpucheck.Check(xp=np, args=None, report={})
    slow = gpucheck.Part("slow", 0.3, lambda c: time_.sleep(30))
    start = time_.monotonic()
    row = gpucheck.run_part(slow, check, 1, 2)
    assert row["status"] == "cut" and time_.monotonic() - start < 2 and row["seconds"] < 1
    failing = gpucheck.Part("failing", 5, lambda c: 1 / 0)
    assert gpucheck.run_part(failing, check, 2, 2)["status"].startswith("failed: ZeroDivision")


def test_a_stack_whose_update_lands_in_a_copy_fails_the_view_check(monkeypatch):
    """gpucheck's stack check on the stood-in device: it passes, and fails when Adam's kernel
    writes a copy of the flat buffer."""
    from flmn_np.core import kernels
    stand_in_device(monkeypatch)
    cfg = gpucheck.tiny_configs()[0]
    with gpucheck.fused_level("step"):
        views, worst = gpucheck.stack_views(np, cfg)
        assert views and worst <= 1e-12
        update = kernels.adam_update
        monkeypatch.setattr(kernels, "adam_update", lambda p, *a, **k: update(p.copy(), *a, **k))
        views, worst = gpucheck.stack_views(np, cfg)
    assert worst > 1e-6
