"""The benchmark command runs and prints its fields (a benchmark is not a test: no timings
are asserted), and its count of array operations is exact: deterministic, moved by exactly one
per time step by one extra operation per time step, and restored afterwards."""
import json

import array_api_strict
import pytest

from flmn_np import bench
from flmn_np.core import backend, kernels, levels, models
from flmn_np.core.backend import cupy_status
from flmn_np.bench import RESHAPE_COPY, count_ops, counting_ops, main
from flmn_np.gradcheck import TINY

FIELDS = {"ms_per_step", "episodes_per_s", "gemm_floor_ms", "floor_ratio", "peak_mem_mb",
          "backend", "model", "batch_size"}


def test_bench_json_fields(capsys):
    assert main(["--model", "mann", "--reads", "2", "--batch-size", "2", "--repeats", "1",
                 "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert FIELDS <= set(result)
    assert (result["model"], result["reads"], result["batch_size"], result["backend"]) == ("mann", 2, 2, "numpy")
    assert result["ms_per_step"] > 0 and result["gemm_floor_ms"] > 0 and result["matmuls_per_step"] > 0
    T = result["steps_per_episode"]
    assert result["array_ops_per_step"] > T and result["array_ops_per_time_step"] == round(result["array_ops_per_step"] / T, 1)
    assert sum(result["ops_by_kind"].values()) == result["array_ops_per_step"]
    assert 0 < result["cupy_launches_per_step"] < result["array_ops_per_step"]
    # ms_per_step and gemm_floor_ms are rounded to 3 decimals, floor_ratio from the unrounded ones
    assert abs(result["floor_ratio"] - result["ms_per_step"] / result["gemm_floor_ms"]) < 0.02


def test_bench_human_readable(capsys):
    assert main(["--batch-size", "2", "--repeats", "1", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "GEMM floor" in out and "step/floor" in out
    assert "array operations:" in out and "per time step" in out


CFGS = {"flmn": dict(model="flmn"), "mann-R4": dict(model="mann", reads=4)}


def _tiny(name):
    """Tiny sizes, but inputs wide enough that bench's random 10%-ink images are never blank."""
    return models.ModelConfig(slots=6, **{**TINY, "input_size": 64}, **CFGS[name])


# the function each level calls once per time step with the gates' input part first
PER_STEP = {False: (models, "core_step_forward"), "elementwise": (models, "core_step_forward"),
            "step": (kernels, "lstm_cell_forward_sum")}


@pytest.mark.parametrize("name", list(CFGS))
@pytest.mark.parametrize("fuse", list(PER_STEP))
def test_count_is_deterministic_and_moves_by_one_per_extra_op_per_time_step(monkeypatch, name, fuse):
    cfg = _tiny(name)
    T = cfg.n_classes * 2
    first = count_ops(cfg, batch_size=2, samples_per_class=2, fuse=fuse)
    assert sum(first.values()) > 10 * T
    assert count_ops(cfg, batch_size=3, samples_per_class=2, fuse=fuse) == first   # not data-dependent

    module, function = PER_STEP[fuse]
    plain = getattr(module, function)

    def one_more_op(z_in, *args):   # one extra top-level operation per time step
        return plain(models.array_namespace(z_in).abs(z_in), *args)

    monkeypatch.setattr(module, function, one_more_op)
    moved = count_ops(cfg, batch_size=2, samples_per_class=2, fuse=fuse)
    assert sum(moved.values()) == sum(first.values()) + T
    assert moved - first == {"abs": T}


@pytest.mark.parametrize("fuse", ["elementwise", "step"])
def test_fused_count_counts_each_kernel_call_once(fuse):
    cfg = _tiny("flmn")
    plain = count_ops(cfg, batch_size=2, samples_per_class=2)
    fused = count_ops(cfg, batch_size=2, samples_per_class=2, fuse=fuse)
    calls = {k: n for k, n in fused.items() if k.startswith("kernel:") and k != "kernel:flmn_adam"}
    assert calls and all(n % (cfg.n_classes * 2) == 0 for n in calls.values())   # per time step
    assert sum(fused.values()) < sum(plain.values())


def launches(counts):
    return sum(n for name, n in counts.items() if name not in bench.VIEW_OPERATIONS)


@pytest.mark.parametrize("name", list(CFGS))
def test_the_step_level_launches_eight_kernels_per_time_step(name):
    """fused_episode's loop: two products and two kernels forward, as many backward; Adam is
    one kernel (after one concat of the grads)."""
    cfg = _tiny(name)
    counts = [count_ops(cfg, batch_size=2, samples_per_class=s, fuse="step") for s in (2, 3)]
    assert launches(counts[1]) - launches(counts[0]) == 8 * cfg.n_classes
    step_forward = f"kernel:{cfg.model}_step_forward"
    assert counts[0]["kernel:flmn_adam"] == 1 and counts[0][step_forward] == 2 * cfg.n_classes


@pytest.mark.parametrize("model,reads", [("flmn", 1), ("mann", 1), ("mann", 4)])
def test_the_step_level_counts_at_most_12_launches_per_time_step(model, reads):
    """At the real sizes, B = 16 and T = 50: the loop's 8 and the rest shared over T."""
    result = bench.operation_counts(models.ModelConfig(model=model, reads=reads), 16)
    assert result["cupy_launches_per_time_step"] <= 12.0
    assert result["cupy_elementwise_launches_per_time_step"] > 40.0


def test_counting_restores_what_it_patched():
    Array = type(array_api_strict.asarray(0.0))
    before = (dict(vars(Array)), models.array_namespace, dict(levels._held))
    with counting_ops(fuse=True) as counter:
        x = array_api_strict.asarray([1.0, 2.0])
        models.array_namespace(x).sum(x * 2.0 + 1.0)
        assert counter.counts == {"sum": 1, "__mul__": 1, "__add__": 1}
        assert levels.step(x)
    assert dict(vars(Array)) == before[0]
    assert (models.array_namespace, dict(levels._held)) == before[1:]
    assert not levels.step(x)
    assert models.array_namespace is backend.array_namespace


@pytest.mark.skipif(cupy_status()[0], reason="a GPU is usable here")
def test_bench_refuses_cupy_without_gpu(capsys):
    assert main(["--backend", "cupy", "--repeats", "1"]) == 2
    assert "cupy" in capsys.readouterr().err.lower()


@pytest.mark.parametrize("name", ["FLMN", "MANN R = 1", "MANN R = 4"])
def test_op_floor_is_the_model_and_counts_fewer(name):
    """benchmarks/op_floor.py: its fewest-operations step gives flmn_np's loss and gradients
    (measure() asserts both in float64) and is counted with fewer operations than flmn_np's."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "op_floor.py"
    spec = importlib.util.spec_from_file_location("op_floor", path)
    op_floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(op_floor)
    m = op_floor.measure(name, batch_size=2, samples_per_class=2)
    assert 0 < m["minimal_forward"] < m["minimal_step"] < m["flmn_np_step"]


@pytest.mark.parametrize("name", list(CFGS))
@pytest.mark.parametrize("fuse", [False, True])
def test_stack_step_counts_do_not_grow_with_S(name, fuse):
    """A stacked step is the same operations (and on the CuPy path the same launches) whatever
    the number of models G; clipping and Adam per model add a fixed few over one model alone."""
    cfg = _tiny(name)
    counts = [count_ops(cfg, 2, 2, fuse=fuse, stack=G) for G in (2, 5, 10)]
    assert counts[0] == counts[1] == counts[2]
    assert sum(counts[0].values()) > sum(count_ops(cfg, 2, 2, fuse=fuse).values())
    # G = 1: the same operations, some reshapes of the model axis views instead of copies
    one = count_ops(cfg, 2, 2, fuse=fuse, stack=1)
    assert {k: v for k, v in one.items() if k != RESHAPE_COPY} == {
        k: v for k, v in counts[0].items() if k != RESHAPE_COPY}
    assert one[RESHAPE_COPY] <= counts[0][RESHAPE_COPY]


@pytest.mark.parametrize("model,reads", [("flmn", 1), ("mann", 1), ("mann", 4)])
def test_a_stack_launches_what_one_model_launches_at_the_step_level(model, reads):
    """At the paper's sizes, B = 16: a stack of 5 models at the 'step' level launches at most
    10% more kernels per step than one model (the per-model clipping and a few copies of the
    model axis), and no elementwise-level kernel."""
    cfg = models.ModelConfig(model=model, reads=reads)
    one = launches(count_ops(cfg, 16, fuse=True))
    stacked = count_ops(cfg, 16, fuse=True, stack=5)
    assert launches(stacked) <= 1.1 * one, (launches(stacked), one)
    assert stacked[f"kernel:{model}_step_forward"] == 50
    assert not any(k.startswith("kernel:") and "address" in k for k in stacked)


def test_bench_stack_prints_rows(capsys):
    assert main(["--stack", "1", "2", "--batch-size", "2", "--repeats", "1", "--warmup", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = result["stacks"]
    assert [r["G"] for r in rows] == [1, 2]
    one = result["one_model_cupy_launches_per_step"]
    assert 0 < one < rows[0]["cupy_launches_per_step"] <= rows[1]["cupy_launches_per_step"]
    for r in rows:
        assert r["cupy_launches_vs_one_model"] == round(r["cupy_launches_per_step"] / one, 3)
    for r in rows:
        assert abs(r["stack_episodes_per_s"] - r["G"] * 2e3 / r["stack_ms_per_step"]) < 0.5
        assert r["stack_peak_mem_mb"] > 0 and r["single_peak_mem_mb"] > 0
    with pytest.raises(SystemExit) as e:
        main(["--stack", "0"])
    assert e.value.code == 2
    assert "--stack: must be an integer >= 1, got 0" in capsys.readouterr().err
