"""NumPy's 'step' level: the step kernels built for the CPU (core/cpu_kernels.py), chosen at
start-up (core/cpu_level.py).

- training steps at it (episode forward, BPTT, per-model clipping, Adam) equal the plain code:
  float64 within 1e-12 of each parameter's largest entry, float32 within 1e-4 (see TOL), for
  FLMN, MANN R = 1 and R = 4, both epsilon placements, one model and a stack;
- bit for bit across runs and thread counts (each episode belongs to one thread);
- start-up: unset or FLMN_FUSED=step holds it, FLMN_FUSED=0 the plain code, without a compiler
  or for a model without a kernel one line says so and the plain code runs, a value that is not
  a NumPy level is one line and exit 2;
- config.json records the level, and --resume at another level says so in one line.
(kill -9 and --resume bit for bit at this level: test_faults.py, whose runs train at NumPy's
default level, this one.)
"""
import json

import numpy as np
import pytest

from flmn_np.core import cpu_kernels, cpu_level, levels
from flmn_np.core.models import ModelConfig, init_params, loss_and_grads, stack_params
from flmn_np.core.optim import Adam, clip_by_global_norm
from flmn_np.gradcheck import TINY

from model_helpers import synthetic_episodes
from run_helpers import tiny_flags, train_in_process

CASES = [("flmn", 1, "product"), ("flmn", 1, "inside"), ("mann", 1, "product"),
         ("mann", 4, "inside")]
STEPS = 3
# float64: within 1e-12 of each parameter's largest entry. float32: the kernels sum in another
# order (reassociated, vectorized), ~1e-7 per operation, and Adam's m / sqrt(v) turns such a
# difference in a near-zero gradient into one of up to lr in its update: within 1e-4 after 3
# steps at lr 1e-2 (measured: at most 6e-6).
TOL = {"float64": 1e-12, "float32": 1e-4}


@pytest.fixture(scope="module")
def cpu():
    try:
        return cpu_level.cpu_step_level()
    except cpu_kernels.CpuKernelError as e:
        pytest.fail(f"the CPU step level does not build here: {e}")


def train(cfg, dtype, level, G=None, B=5, threads=None):
    """STEPS clipped Adam steps of model 0 (G None) or models 0..G-1 as a stack, at `level`."""
    rng = np.random.default_rng(4)
    n = 1 if G is None else G
    batches = [[synthetic_episodes(rng, B, C=cfg.n_classes, S=3, D=cfg.input_size)
                for _ in range(n)] for _ in range(STEPS)]
    saved = cpu_kernels.num_threads()
    if threads:
        cpu_kernels.set_num_threads(threads)
    try:
        with levels.use_level("numpy", level):
            if G is None:
                params, lead = init_params(cfg, 0, np, dtype), ()
                opt = Adam(params, lr=1e-2)
            else:
                params = stack_params([init_params(cfg, s, np, dtype) for s in range(G)])
                lead = (G,)
                opt = Adam(params, lr=[1e-2] * G, lead=lead)
            for step in batches:
                x = np.stack([xs.astype(dtype) for xs, _ in step])
                y = np.stack([ys for _, ys in step])
                if G is None:
                    x, y = x[0], y[0]
                _, _, grads = loss_and_grads(params, x, y, cfg)
                opt.step(params, clip_by_global_norm(grads, 1.0, lead)[0])
    finally:
        cpu_kernels.set_num_threads(saved)
    return {k: np.array(v) for k, v in params.items()}


@pytest.mark.parametrize("G", [None, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model,R,placement", CASES)
def test_training_at_the_cpu_level_equals_the_plain_code(cpu, model, R, placement, dtype, G):
    cfg = ModelConfig(model=model, reads=R, slots=6, cosine_eps=placement, **TINY)
    plain = train(cfg, dtype, levels.PLAIN, G)
    got = train(cfg, dtype, cpu, G)
    init = init_params(cfg, 0, np, dtype)
    for k in plain:
        scale = np.abs(plain[k]).max()
        first = plain[k] if G is None else plain[k][0]
        assert np.abs(first - init[k]).max() > 1e-3, f"{k} did not train"
        assert np.abs(got[k] - plain[k]).max() <= TOL[dtype] * scale, k


@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 4)])
def test_the_cpu_level_is_bit_for_bit_across_runs_and_threads(cpu, model, R):
    """E = 3 B = 39 episodes over 1 or 2 threads, twice: the same bits."""
    cfg = ModelConfig(model=model, reads=R, slots=6, **TINY)
    runs = [train(cfg, "float32", cpu, G=3, B=13, threads=t) for t in (1, 2, 2)]
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
        np.testing.assert_array_equal(runs[1][k], runs[2][k])


def test_start_up_holds_the_level_the_environment_asks_for(monkeypatch):
    lines = []
    monkeypatch.delenv("FLMN_FUSED", raising=False)
    assert cpu_level.start_level(np, ModelConfig(), lines.append) == cpu_level.CPU_DEFAULT
    assert levels.name(np.zeros(1)) == cpu_level.CPU_DEFAULT == "step" and lines == []
    assert levels.of(np.zeros(1)).launch_raw is cpu_kernels.launch_cpu
    monkeypatch.setenv("FLMN_FUSED", "0")
    assert cpu_level.start_level(np, ModelConfig(), lines.append) == "xp" and lines == []
    assert levels.of(np.zeros(1)) == levels.PLAIN


def test_without_a_compiler_or_a_kernel_one_line_says_so_and_numpy_runs_plain(monkeypatch):
    monkeypatch.delenv("FLMN_FUSED", raising=False)
    lines = []
    assert cpu_level.start_level(np, ModelConfig(model="mann", reads=9), lines.append) == "xp"
    assert len(lines) == 1 and "no step kernel for MANN with 9 heads" in lines[0]

    def no_compiler():
        raise cpu_kernels.CpuKernelError("no C++ compiler found (neither CXX nor g++ or c++ on "
                                         "PATH): the CPU kernels need one (install g++, or set CXX)")
    monkeypatch.setattr(cpu_kernels, "library", no_compiler)
    lines.clear()
    assert cpu_level.start_level(np, ModelConfig(), lines.append) == "xp"
    assert len(lines) == 1 and "no C++ compiler found" in lines[0] and "plain NumPy" in lines[0]
    assert levels.of(np.zeros(1)) == levels.PLAIN


def test_a_kernel_that_fails_the_start_up_check_is_not_used(monkeypatch):
    """A CPU build whose Adam writes nothing differs from the plain code's step: refused."""
    monkeypatch.delenv("FLMN_FUSED", raising=False)
    good = cpu_level.cpu_step_level()
    broken = levels.Level("step", launch=lambda spec, ins, outs: None, launch_raw=good.launch_raw)
    monkeypatch.setattr(cpu_level, "cpu_step_level", lambda: broken)
    lines = []
    assert cpu_level.start_level(np, ModelConfig(), lines.append) == "xp"
    assert len(lines) == 1 and "differs from the plain code" in lines[0]


def test_the_level_is_recorded_and_a_resume_at_another_says_so(tmp_path, data_dir, monkeypatch,
                                                               capsys):
    out = tmp_path / "run"
    monkeypatch.delenv("FLMN_FUSED", raising=False)
    assert train_in_process(tiny_flags(data_dir, out, **{"--steps": 2})) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["level"] == "step"
    capsys.readouterr()
    monkeypatch.setenv("FLMN_FUSED", "0")
    assert train_in_process(tiny_flags(data_dir, out, **{"--steps": 4}) + ["--resume"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "goes on at level" in line]
    assert len(said) == 1 and "level step until step 2" in said[0] and "level xp" in said[0]
    record = json.loads((out / "config.json").read_text())
    assert record["resumes"][-1]["level"] == "xp"
    assert train_in_process(tiny_flags(data_dir, out, **{"--steps": 6}) + ["--resume"]) == 0
    assert "goes on at level" not in capsys.readouterr().out


def test_a_value_that_is_not_a_numpy_level_is_one_line(tmp_path, data_dir, monkeypatch, capsys):
    from run_helpers import one_line_error
    monkeypatch.setenv("FLMN_FUSED", "elementwise")
    code = train_in_process(tiny_flags(data_dir, tmp_path / "run"))
    one_line_error(capsys, code, "FLMN_FUSED='elementwise'", "on NumPy the levels are")
    assert not (tmp_path / "run").exists()
