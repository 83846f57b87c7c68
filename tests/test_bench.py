"""The benchmark command runs and prints its fields (a benchmark is not a test: no timings
are asserted)."""
import json

import pytest

from flmn_np.core.backend import cupy_status
from flmn_np.bench import main

FIELDS = {"ms_per_step", "episodes_per_s", "gemm_floor_ms", "floor_ratio", "peak_mem_mb",
          "backend", "model", "batch_size"}


def test_bench_json_fields(capsys):
    assert main(["--model", "mann", "--reads", "2", "--batch-size", "2", "--repeats", "1",
                 "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert FIELDS <= set(result)
    assert (result["model"], result["reads"], result["batch_size"], result["backend"]) == ("mann", 2, 2, "numpy")
    assert result["ms_per_step"] > 0 and result["gemm_floor_ms"] > 0 and result["matmuls_per_step"] > 0
    assert result["floor_ratio"] == round(result["ms_per_step"] / result["gemm_floor_ms"], 2) or \
        abs(result["floor_ratio"] - result["ms_per_step"] / result["gemm_floor_ms"]) < 0.02


def test_bench_human_readable(capsys):
    assert main(["--batch-size", "2", "--repeats", "1", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "GEMM floor" in out and "step/floor" in out


@pytest.mark.skipif(cupy_status()[0], reason="a GPU is usable here")
def test_bench_refuses_cupy_without_gpu(capsys):
    assert main(["--backend", "cupy", "--repeats", "1"]) == 2
    assert "cupy" in capsys.readouterr().err.lower()
