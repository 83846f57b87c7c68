"""The memory-step kernels (flmn_np/core/step_kernels.py) against the plain xp code.

Without a GPU (tests/kernel_harness.py):
- compile: step_kernels.SOURCE, the very string cupy.RawModule compiles, compiles with NVRTC
  for sm_80 and sm_90 with every kernel in float32 and float64, and a broken copy does not;
- semantics: the same SOURCE, unchanged, runs on the CPU (g++, one loop over the threads)
  through step_kernels' own wrappers and matches flmn.py / mann.py, forward and backward, for
  FLMN, MANN R = 1..4 and both epsilon placements: float64 within 1e-12 and float32 within 2e-6
  of each output's largest entry, on saturating heads, empty (1e-6) slots, a zero key and
  stacked leading axes; least-used ties pick the xp code's slot;
- mutations of the source (a dropped term of the softmax backward, the tie-break turned, the
  read taken before the write) make that comparison fail.
"""
from pathlib import Path

import numpy as np
import pytest

from flmn_np.core import step_kernels
from flmn_np.core.addressing import COSINE_EPS
from flmn_np.core.backend import cupy_status
from flmn_np.core.models import ModelConfig

from kernel_harness import (launch_raw_cpp, nvrtc_compile_module, raw_launcher,
                            step_level_on_cpu)

gpu_usable, gpu_reason = cupy_status()
needs_gpu = pytest.mark.skipif(not gpu_usable, reason=gpu_reason)

TOL = {np.float64: 1e-12, np.float32: 2e-6}
ARCHS = ("80", "90")
CASES = [("flmn", 1, "product"), ("flmn", 1, "inside"), ("mann", 1, "product"),
         ("mann", 2, "inside"), ("mann", 3, "product"), ("mann", 4, "inside")]


def step_case(model, R, placement, dtype, lead=(3,), mann_add="separate", seed=0):
    """cfg and inputs of one memory step at the edges: a state after three xp steps from the
    initial memory (empty 1e-6 slots remain: N = 7 > 3 writes), heads with saturating entries
    (+-35) and, in the first episode, a zero key; gradients from t+1 of every carried field.
    lead: the episodes' leading shape; with two axes b_head has one row per leading index."""
    cfg = ModelConfig(model=model, reads=R, slots=7, width=5, hidden=6, cosine_eps=placement,
                      mann_add=mann_add)
    rng = np.random.default_rng(seed)
    mod, n_head = cfg.memory, cfg.memory.head_size(cfg)
    E = int(np.prod(lead))
    mem = mod.initial_memory(cfg, E, np, dtype)
    for _ in range(3):
        _, mem, _ = mod.memory_step_forward((2.0 * rng.standard_normal((E, n_head))).astype(dtype),
                                            mem, cfg)
    heads = 2.0 * rng.standard_normal((E, n_head))
    heads[1, ::4] = 35.0 * np.sign(heads[1, ::4])
    b_head = 0.5 * rng.standard_normal(lead[:-1] + (n_head,))
    b_rows = np.repeat(b_head.reshape(-1, n_head), E // b_head[..., 0].size, axis=0)
    heads[0, :R * cfg.width] = -b_rows[0, :R * cfg.width]             # heads + b_head: a zero key
    RW = mod.read_size(cfg)
    dr_next, dr_out = rng.standard_normal((2, E, RW))
    carried = ("M_f", "M_l", "w_r", "w_wf") if model == "flmn" else ("M", "w_r")
    dmem = mem._replace(**{f: rng.standard_normal(getattr(mem, f).shape).astype(dtype)
                           for f in carried},
                        **{f: None for f in mem._fields if f not in carried})

    def shaped(a):
        return np.ascontiguousarray(a.reshape(lead + a.shape[1:]).astype(dtype))
    return cfg, dict(heads=heads.astype(dtype), b_head=b_head.astype(dtype),
                     b_rows=b_rows.astype(dtype), mem=mem, dr_next=dr_next.astype(dtype),
                     dr_out=dr_out.astype(dtype), dmem=dmem, shaped=shaped)


def xp_step(cfg, case):
    """The plain xp step: r, mem, then dheads and dmem_prev, all flattened to (E, ...)."""
    mod = cfg.memory
    r, mem, cache = mod.memory_step_forward(case["heads"] + case["b_rows"], case["mem"], cfg)
    dheads, dmem_prev = mod.memory_step_backward(case["dr_next"] + case["dr_out"], case["dmem"],
                                                 cache)
    return [r, *mem, dheads, *dmem_prev]


def kernel_step(cfg, case, launch=launch_raw_cpp):
    """The same through step_kernels' wrappers, on the leading shape of case['shaped']."""
    s = case["shaped"]
    mem, dmem = (type(m)(*(None if a is None else s(a) for a in m))
                 for m in (case["mem"], case["dmem"]))
    r, mem_t, cache = step_kernels.STEP_FORWARD[cfg.model](s(case["heads"]), case["b_head"], mem,
                                                          cfg, COSINE_EPS, launch=launch)
    dheads, dmem_prev = step_kernels.STEP_BACKWARD[cfg.model](s(case["dr_next"]), s(case["dr_out"]),
                                                              dmem, cache, cfg, COSINE_EPS,
                                                              launch=launch)
    return [r, *mem_t, dheads, *dmem_prev]


def errors(got, want):
    """|got - want| / max |want| per output (None for the fields without a gradient)."""
    return [None if w is None else float(np.max(np.abs(np.reshape(g, w.shape) - w))
                                         / max(np.max(np.abs(w)), 1e-300))
            for g, w in zip(got, want)]


def worst(got, want):
    return max(e for e in errors(got, want) if e is not None)


# ----------------------------------------------------------------------- compile, offline

@pytest.mark.parametrize("arch", ARCHS)
def test_source_compiles_with_nvrtc(arch):
    """The module CuPy builds: every kernel, float32 and float64 (its name expressions)."""
    cubin, seconds = nvrtc_compile_module(step_kernels.SOURCE, step_kernels.NAME_EXPRESSIONS,
                                          step_kernels.OPTIONS, arch)
    assert cubin.startswith(b"\x7fELF"), "NVRTC gave no cubin"
    for spec in step_kernels.SPECS:
        for t in "fd":      # the mangled name of name<float>, name<double>
            mangled = f"_Z{len(spec.name)}{spec.name}I{t}E".encode()
            assert mangled in cubin, f"{spec.name}<{t}> is not in the cubin"


def test_a_broken_source_fails_to_compile():
    from cupy.cuda.compiler import CompileException
    broken = step_kernels.SOURCE.replace("T g_w = act[3 * W];", "T g_w = act[3 * W]", 1)
    assert broken != step_kernels.SOURCE
    with pytest.raises(CompileException, match="expected a \";\""):
        nvrtc_compile_module(broken, step_kernels.NAME_EXPRESSIONS, step_kernels.OPTIONS, "80")


def _file_line(text):
    """The line of flmn_np/core/step_kernels.py that first holds text."""
    lines = Path(step_kernels.__file__).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def test_a_compile_error_names_the_line_of_the_file():
    """SOURCE carries #line directives: NVRTC and g++ name step_kernels.py and a line of it, a
    line at or just after the broken statement that holds the code the compiler quotes."""
    import re
    from cupy.cuda.compiler import CompileException
    from kernel_harness import build_cpp, raw_cpp_source
    lines = Path(step_kernels.__file__).read_text().splitlines()
    line = _file_line("T g_w = act[3 * W];")
    broken = step_kernels.SOURCE.replace("T g_w = act[3 * W];", "T g_w = act[3 * W]", 1)
    with pytest.raises(CompileException) as e:
        nvrtc_compile_module(broken, step_kernels.NAME_EXPRESSIONS, step_kernels.OPTIONS, "80")
    named, quoted = re.search(r"step_kernels\.py\((\d+)\): error[^\n]*\n([^\n]*)",
                              str(e.value)).groups()
    assert line <= int(named) <= line + 3 and lines[int(named) - 1].strip() == quoted.strip()
    with pytest.raises(RuntimeError) as e:
        build_cpp(raw_cpp_source(step_kernels.FLMN_FORWARD, "double", broken))
    named = int(re.search(r"step_kernels\.py:(\d+):\d+: error", str(e.value)).group(1))
    assert line <= named <= line + 3, str(e.value)


# ----------------------------------------------------------------------- semantics on the CPU

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("model,R,placement", CASES)
def test_step_kernels_on_cpu_equal_xp(model, R, placement, dtype):
    cfg, case = step_case(model, R, placement, dtype)
    got, want = kernel_step(cfg, case), xp_step(cfg, case)
    assert worst(got, want) < TOL[dtype], errors(got, want)


@pytest.mark.parametrize("model,R,mann_add", [("flmn", 1, "separate"), ("mann", 3, "key")])
def test_stacked_episodes_with_a_bias_row_each_equal_xp(model, R, mann_add):
    """Leading axes (S, B) = (2, 3): every leading index an episode, b_head (S, n) a row per S."""
    cfg, case = step_case(model, R, "product", np.float64, lead=(2, 3), mann_add=mann_add)
    got, want = kernel_step(cfg, case), xp_step(cfg, case)
    assert worst(got, want) < TOL[np.float64], errors(got, want)


def tie_case(R):
    """The first step from the initial memory: every slot but the erased one holds 1e-6 and no
    weight, so w_u ties among them and least-used must pick the lowest indices, in order."""
    cfg, case = step_case("mann" if R > 1 else "flmn", R, "product", np.float64, seed=1)
    mod = cfg.memory
    case["mem"] = mod.initial_memory(cfg, case["heads"].shape[0], np, np.float64)
    gates = slice(mod.head_size(cfg) - R, None)         # g_w = 0: the least-used slots written
    case["heads"][:, gates] = -35.0 - case["b_rows"][:, gates]
    return cfg, case


@pytest.mark.parametrize("R", [1, 4])
def test_least_used_ties_pick_the_xp_slot(R):
    cfg, case = tie_case(R)
    r, mem, cache = step_kernels.STEP_FORWARD[cfg.model](case["heads"], case["b_head"],
                                                        case["mem"], cfg, COSINE_EPS,
                                                        launch=launch_raw_cpp)
    _, mem_x, _ = cfg.memory.memory_step_forward(case["heads"] + case["b_rows"], case["mem"], cfg)
    w_u = mem_x.w_u
    assert all(np.sum(w_u[e] == np.min(w_u[e])) > 1 for e in range(w_u.shape[0])), "no tie"
    np.testing.assert_array_equal(mem.w_lu, mem_x.w_lu)


# --------------------------------------------------------------------------- mutations

MUTATIONS = {
    # the softmax backward w (dw - sum_v dw w) without its sum term (FLMN's and MANN's)
    "softmax_sum_dropped": [("w_r[i] * (dw_r_prev[i] - s) / c.denom",
                             "w_r[i] * dw_r_prev[i] / c.denom"),
                            ("(dw_r_prev[j * N + i] - s[j])", "dw_r_prev[j * N + i]")],
    # ties to the highest index instead of the lowest
    "tie_break_turned": [("(best < 0 || w_u[i] < w_u[best])", "(best < 0 || w_u[i] <= w_u[best])")],
    # the read from the memory before this step's write
    "read_before_write": [("read_memory(w_r, M_l, N, W, r);",
                           "read_memory(w_r, M_l_prev, N, W, r);"),
                          ("read_memory(w_r + j * N, M, N, W, r + j * W);",
                           "read_memory(w_r + j * N, M_prev, N, W, r + j * W);")],
}


def mutated_launcher(name):
    source = step_kernels.SOURCE
    for old, new in MUTATIONS[name]:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return raw_launcher(source)


@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 4)])
@pytest.mark.parametrize("name", ["softmax_sum_dropped", "read_before_write"])
def test_a_mutated_source_fails_the_comparison(name, model, R):
    cfg, case = step_case(model, R, "product", np.float64)
    want = xp_step(cfg, case)
    assert worst(kernel_step(cfg, case), want) < TOL[np.float64]
    assert worst(kernel_step(cfg, case, mutated_launcher(name)), want) > 1e-3


@pytest.mark.parametrize("R", [1, 4])
def test_a_turned_tie_break_picks_another_slot(R):
    cfg, case = tie_case(R)
    _, mem_x, _ = cfg.memory.memory_step_forward(case["heads"] + case["b_rows"], case["mem"], cfg)
    turned = mutated_launcher("tie_break_turned")
    _, mem, _ = step_kernels.STEP_FORWARD[cfg.model](case["heads"], case["b_head"], case["mem"],
                                                    cfg, COSINE_EPS, launch=turned)
    assert not np.array_equal(mem.w_lu, mem_x.w_lu)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("model,R,placement", CASES)
def test_step_kernels_on_gpu_equal_xp(model, R, placement, dtype):
    import cupy
    cfg, case = step_case(model, R, placement, dtype)
    want = xp_step(cfg, case)
    gpu = {k: cupy.asarray(v) if isinstance(v, np.ndarray) else v for k, v in case.items()}
    for k in ("mem", "dmem"):
        gpu[k] = type(case[k])(*(None if a is None else cupy.asarray(a) for a in case[k]))
    gpu["shaped"] = lambda a: cupy.ascontiguousarray(a.reshape((3,) + a.shape[1:]))
    got = [None if a is None else cupy.asnumpy(a)
           for a in kernel_step(cfg, gpu, launch=step_kernels.launch_cupy)]
    assert worst(got, want) < TOL[dtype], errors(got, want)


# --------------------------------------------------------------- the 'step' level, whole

@pytest.mark.parametrize("model,R,placement", [("flmn", 1, "product"), ("flmn", 1, "inside"),
                                               ("mann", 1, "product"), ("mann", 4, "inside")])
def test_training_steps_at_the_step_level_on_cpu_equal_xp(model, R, placement):
    """Two training steps (episode forward, BPTT, Adam) at the 'step' level with every kernel
    run on the CPU from its source: the xp code's loss, logits, gradients and params (float64).
    Set up outside the fixture's patches, so the reference is the plain xp code."""
    from flmn_np.core.models import loss_and_grads
    from flmn_np.core.optim import Adam
    from flmn_np.gradcheck import TINY, tiny_episode
    cfg = ModelConfig(model=model, reads=R, slots=6, cosine_eps=placement, **TINY)
    p, x, y = tiny_episode(cfg, seed=2)

    def train():
        params = {k: v.copy() for k, v in p.items()}
        opt, out = Adam(params, lr=1e-2), []
        for _ in range(2):
            loss, logits, grads = loss_and_grads(params, x, y, cfg)
            opt.step(params, grads)
            out.append((loss, logits, grads))
        return out, params

    want, params_x = train()
    with pytest.MonkeyPatch.context() as mp:
        launched = step_level_on_cpu(mp)
        got, params_k = train()
    assert {f"{model}_step_forward", f"{model}_step_backward", "flmn_lstm_cell_forward_sum",
            "flmn_lstm_cell_backward_sum", "flmn_adam"} <= launched
    for (l_g, z_g, g_g), (l_w, z_w, g_w) in zip(got, want):
        np.testing.assert_allclose(l_g, l_w, rtol=1e-12)
        np.testing.assert_allclose(z_g, z_w, rtol=1e-10, atol=1e-12)
        for k in p:
            np.testing.assert_allclose(g_g[k], g_w[k], rtol=1e-8, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(params_k[k], params_x[k], rtol=1e-10, atol=1e-12)
