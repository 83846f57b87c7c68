"""The fused kernels (flmn_np/core/kernels.py) against the plain xp code they replace.

Without a GPU (tests/kernel_harness.py):
- construct: every spec builds a cupy.ElementwiseKernel (CuPy checks names at construction);
- compile: the CUDA source CuPy generates for each wrapper's launch compiles with NVRTC for
  sm_80 and sm_90 in float32 and float64, and a broken body does not;
- semantics: each body, unchanged, runs on the CPU (g++) through the project's own wrappers and
  matches the xp code (float64 within 1e-12, float32 within 2e-6; for the memory step relative
  to each output's largest entry) on saturating inputs, empty and zero slots and a zero key, and
  a dropped factor or swapped gate slices make that comparison fail; whole FLMN and MANN
  episodes through every kernel give the xp loss and gradients.
On a GPU: the same comparisons with CuPy, and whole episodes fused against NumPy.
"""
import numpy as np
import pytest

from flmn_np.core import addressing, kernels, levels, lstm, memory, ops, step_kernels
from flmn_np.core.backend import BackendError, cupy_startup_error, cupy_status, get_xp, to_numpy
from flmn_np.core.models import ModelConfig, loss_and_grads, stack_params
from flmn_np.gradcheck import TINY, tiny_episode

from kernel_harness import (cuda_source, import_cupy, launch_cpp, nvrtc_compile, recorded_launches)

TOL = {np.float64: 1e-12, np.float32: 2e-6}
ARCHS = ("80", "90")
gpu_usable, gpu_reason = cupy_status()
needs_gpu = pytest.mark.skipif(not gpu_usable, reason=gpu_reason)


def lstm_inputs(dtype, B=5, H=7, seed=0):
    """z (B, 4H) with every third column at +-35 on every other row (sigmoid and tanh saturate:
    |z| > 30), c_prev with entries up to ~20 (tanh(c) saturates too), dh, dc (B, H)."""
    rng = np.random.default_rng(seed)
    z = 3.0 * rng.standard_normal((B, 4 * H))
    z[::2, ::3] = 35.0 * np.sign(rng.standard_normal(z[::2, ::3].shape))
    c_prev = 2.0 * rng.standard_normal((B, H))
    c_prev[1, :2] = (20.0, -20.0)
    dh, dc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    return tuple(a.astype(dtype) for a in (z, c_prev, dh, dc))


def write_inputs(dtype, B=3, N=6, W=4, seed=1):
    """M_prev (B, N, W), w (B, 1, N), a (B, 1, W), erase (B, N) one-hot."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((B, N, W))
    w, a = rng.random((B, 1, N)), np.tanh(3.0 * rng.standard_normal((B, 1, W)))
    erase = np.eye(N)[rng.integers(0, N, B)]
    return tuple(x.astype(dtype) for x in (M, w, a, erase))


def lstm_outputs(z, c_prev, dh, dc, launch=None):
    """(h, c, ifo, g, tanh_c, dz, dc_prev): fused through `launch`, else the xp code."""
    if launch is None:
        h, c, cache = lstm.lstm_cell_forward(z, c_prev)
        dz, dc_prev = lstm.lstm_cell_backward(dh, dc, cache)
    else:
        h, c, cache = kernels.lstm_cell_forward(z, c_prev, launch=launch)
        dz, dc_prev = kernels.lstm_cell_backward(dh, dc, cache, launch=launch)
    ifo, g, _, tanh_c = cache
    return h, c, ifo, g, tanh_c, dz, dc_prev


def memory_units(dtype, B=3, N=6, W=4):
    """name -> run(launch): the outputs of one fused wrapper of the memory step through `launch`,
    or (launch None) of the xp code it replaces, on inputs at the edges: saturating heads,
    one-hot and soft weights, 1e-6-filled (empty) slots, a zero slot and a zero key."""
    rng = np.random.default_rng(3)
    M, w, a, erase = write_inputs(dtype, B, N, W)
    keep = (1.0 - erase)[:, :, None]
    heads = 4.0 * rng.standard_normal((B, 3 * W + 1))
    heads[0, ::3] = 35.0
    d_tanh, d_gates = rng.standard_normal((B, 3 * W)), rng.standard_normal((B, 1))
    w_u, w_b = rng.random((B, N)), rng.random((B, 1, N))
    w3, w3_b = rng.random((B, 3, N)), rng.random((B, 3, N))               # three heads
    heads, d_tanh, d_gates, w_u, w_b, w3, w3_b = (x.astype(dtype) for x in
                                                  (heads, d_tanh, d_gates, w_u, w_b, w3, w3_b))
    g_w = heads[:, :1]

    def interface(launch):
        if launch is None:
            tanh_part, gates, cache = ops.interface_forward(heads, 3 * W)
            return tanh_part, gates, ops.interface_backward(d_tanh, d_gates, cache)
        tanh_part, gates, cache = kernels.interface_forward(heads, 3 * W, launch)
        return tanh_part, gates, kernels.interface_backward(d_tanh, d_gates, cache, launch)

    def write_weights(launch):
        w_r, w_lu = w_b, w[:, :, ::-1]
        w_w, (_, diff) = (memory.write_weights_forward(g_w, w_r, w_lu) if launch is None
                          else kernels.write_weights_forward(g_w, w_r, w_lu, launch))
        return w_w, diff

    def address(R, placement):
        k = np.tanh(2.0 * rng.standard_normal((B, R, W)))
        k[0, 0] = 0.0                                          # a zero key
        Mk = M.copy()
        Mk[:, :2] = 1e-6                                       # empty slots
        Mk[1, 2] = 0.0                                         # a zero slot
        dw = rng.standard_normal((B, R, N))
        k, Mk, dw = (x.astype(dtype) for x in (k, Mk, dw))

        def run(launch):
            if launch is None:
                w_r, cache = addressing.address_forward(k, Mk, placement)
                return (w_r, *addressing.address_backward(dw, cache))
            w_r, cache = kernels.address_forward(k, Mk, placement, addressing.COSINE_EPS, launch)
            return (w_r, *kernels.address_backward(dw, cache, launch))
        return run

    z_in, c_prev, dh, dc = lstm_inputs(dtype)
    z_rec, dh_next, dh_out = (x.astype(dtype) for x in (rng.standard_normal(z_in.shape),
                                                        *rng.standard_normal((2, *dh.shape))))

    def lstm_sum(launch):       # the 'step' level's cells: the sums taken inside
        if launch is None:
            h, c, cache = lstm.lstm_cell_forward(z_in + z_rec, c_prev)
            return (h, c, *cache, *lstm.lstm_cell_backward(dh + dh_next + dh_out, dc, cache))
        h_rh = np.zeros((z_in.shape[0], 3 * dh.shape[1]), dtype)[:, 1::3]   # a strided view
        h, c, cache = kernels.lstm_cell_forward_sum(z_in, z_rec, c_prev, h_rh, launch)
        assert np.array_equal(h_rh, h)
        dz = np.empty_like(z_in)
        return (h, c, *cache, *kernels.lstm_cell_backward_sum(dh, dh_next, dh_out, dc, cache,
                                                              dz, launch))

    def adam(lr_rows):          # optim.Adam's xp step against one kernel; lr_t a row each
        g, p0, m0 = (x.astype(dtype) for x in rng.standard_normal((3, 2, 9)))
        v0 = (rng.random((2, 9)) ** 2).astype(dtype)
        lr_t = np.array([[1e-3], [3e-2]], dtype) if lr_rows else 1e-3

        def run(launch):
            p, m, v = p0.copy(), m0.copy(), v0.copy()
            if launch is None:
                m += (1.0 - 0.9) * (g - m)
                v += (1.0 - 0.999) * (g * g - v)
                p -= lr_t * m / (np.sqrt(v) + 1e-8)
            else:
                kernels.adam_update(p, m, v, g, lr_t, 0.9, 0.999, 1e-8, launch)
            return p, m, v
        return run

    return {
        "lstm_sum": lstm_sum, "adam": adam(False), "adam_lr_rows": adam(True),
        "write_erase": lambda launch: [memory.write_forward(M, w, a, erase=erase)[0] if launch is None
                                       else kernels.write_forward(M, w, a, keep, launch)],
        "write_add": lambda launch: [memory.write_forward(M, w, a)[0] if launch is None
                                     else kernels.write_forward(M, w, a, None, launch)],
        "interface": interface,
        "write_weights": write_weights,
        "usage": lambda launch: [memory.usage_forward(w_u, 0.95, w, w_b) if launch is None
                                 else kernels.usage_forward(w_u, 0.95, w[:, 0], w_b[:, 0], launch)],
        "usage_R3": lambda launch: [memory.usage_forward(w_u, 0.95, w3, w3_b) if launch is None
                                    else kernels.usage_forward(w_u, 0.95, w3.sum(1), w3_b.sum(1), launch)],
        **{f"address_R{R}_{p}": address(R, p) for R in (1, 3) for p in addressing.COSINE_EPS_PLACEMENTS},
    }


UNITS = list(memory_units(np.float64))


def max_error(fused, plain):
    """Largest |fused - plain| / max(1, |plain|) over a list of array pairs."""
    return max(float(np.max(np.abs(f - p) / np.maximum(1.0, np.abs(p))))
               for f, p in zip(fused, plain))


def mutated(spec, old, new):
    """A launcher that runs `spec` with `old` replaced by `new` in its body, others as they are."""
    assert old in spec.body
    bad = spec._replace(body=spec.body.replace(old, new))
    return lambda s, inputs, outputs: launch_cpp(bad if s == spec else s, inputs, outputs)


# ------------------------------------------------------------------------------- construct

def test_every_kernel_constructs():
    import_cupy()
    for spec in kernels.SPECS:
        k = kernels.cupy_kernel(spec)
        assert (k.name, k.nin, k.nout) == (spec.name, len(spec.in_params.split(",")),
                                           len(spec.out_params.split(",")))


def test_a_parameter_named_i_is_rejected():
    import_cupy()
    spec = kernels.LSTM_FORWARD
    old_names = spec._replace(out_params=spec.out_params.replace("i_", "i"),
                              body=spec.body.replace("i_", "i"))
    with pytest.raises(ValueError, match="Can not use 'i'"):
        kernels.cupy_kernel(old_names)


# ---------------------------------------------------------------------- compile, offline

def launches(dtype):
    """Every (spec, inputs, outputs) the wrappers hand their launcher, on arrays of dtype."""
    z, c_prev, dh, dc = lstm_inputs(dtype)
    _, _, cache = lstm.lstm_cell_forward(z, c_prev)
    calls = (recorded_launches(kernels.lstm_cell_forward, z, c_prev)
             + recorded_launches(kernels.lstm_cell_backward, dh, dc, cache))
    for run in memory_units(dtype).values():
        run(lambda spec, inputs, outputs: (calls.append((spec, inputs, outputs)),
                                           launch_cpp(spec, inputs, outputs)))
    assert {c[0] for c in calls} == set(kernels.SPECS)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_with_nvrtc(arch, dtype):
    """Each distinct source the launches generate (a kernel, its arguments' dimensions and
    layouts) compiles; launches that generate the same source are compiled once."""
    sources = {}
    for spec, inputs, outputs in launches(dtype):
        sources.setdefault(cuda_source(spec, inputs, outputs), spec)
    assert set(sources.values()) == set(kernels.SPECS)
    for code, spec in sources.items():
        assert f"typedef {'float' if dtype == np.float32 else 'double'} T;" in code
        assert spec.body in code
        cubin, seconds = nvrtc_compile(code, arch)
        assert cubin.startswith(b"\x7fELF"), f"{spec.name}: NVRTC gave no cubin"


@pytest.mark.parametrize("old,new,error", [
    ("tanh_c = tanh(c);", "tanh_c = tanh(c)", "expected a \";\""),          # syntax error
    ("f * c_prev", "f * c_prev_t", "identifier \"c_prev_t\" is undefined"),  # undefined name
])
def test_a_broken_body_fails_to_compile(old, new, error):
    import_cupy()
    from cupy.cuda.compiler import CompileException
    spec, inputs, outputs = launches(np.float64)[0]
    broken = spec._replace(body=spec.body.replace(old, new))
    with pytest.raises(CompileException, match=error):
        nvrtc_compile(cuda_source(broken, inputs, outputs), "80")


# ----------------------------------------------------------------------- semantics on the CPU

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_kernels_on_cpu_equal_xp(dtype):
    args = lstm_inputs(dtype)
    fused, plain = lstm_outputs(*args, launch=launch_cpp), lstm_outputs(*args)
    for f, p in zip(fused, plain):
        assert f.dtype == p.dtype == dtype and f.shape == p.shape
        np.testing.assert_allclose(f, p, rtol=TOL[dtype], atol=TOL[dtype])
    ifo = plain[2]
    assert np.any(np.abs(args[0]) > 30) and np.min(ifo * (1.0 - ifo)) < 1e-12   # saturated gates


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_caches_mix_between_fused_and_xp(dtype):
    """Fused forward + xp backward and xp forward + fused backward give the xp gradients."""
    z, c_prev, dh, dc = lstm_inputs(dtype)
    _, _, cache_fused = kernels.lstm_cell_forward(z, c_prev, launch=launch_cpp)
    _, _, cache_xp = lstm.lstm_cell_forward(z, c_prev)
    want = lstm.lstm_cell_backward(dh, dc, cache_xp)
    for got in (lstm.lstm_cell_backward(dh, dc, cache_fused),
                kernels.lstm_cell_backward(dh, dc, cache_xp, launch=launch_cpp)):
        for f, p in zip(got, want):
            np.testing.assert_allclose(f, p, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_write_kernel_on_cpu_equals_xp(dtype):
    M, w, a, erase = write_inputs(dtype)
    M_xp, (_, _, keep) = memory.write_forward(M, w, a, erase=erase)
    M_fused = kernels.write_forward(M, w, a, keep, launch=launch_cpp)
    assert M_fused.dtype == dtype
    np.testing.assert_allclose(M_fused, M_xp, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_memory_kernels_on_cpu_equal_xp(unit, dtype):
    """Within TOL of each output's largest entry: the gradients at empty slots are sums of terms
    ~1/|M| that cancel, so a 1-ulp difference between g++'s and NumPy's float32 exp shows up
    relative to those terms, not to the (smaller) result."""
    run = memory_units(dtype)[unit]
    fused, plain = run(launch_cpp), run(None)
    assert len(fused) == len(plain)
    for f, p in zip(fused, plain):
        assert f.dtype == p.dtype == dtype and f.shape == p.shape
        scale = max(1.0, float(np.max(np.abs(p))))
        np.testing.assert_allclose(f, p, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("placement", addressing.COSINE_EPS_PLACEMENTS)
def test_address_caches_mix_between_fused_and_xp(placement):
    rng = np.random.default_rng(4)
    k, M, dw = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 5))
    w_x, cache_x = addressing.address_forward(k, M, placement)
    w_f, cache_f = kernels.address_forward(k, M, placement, addressing.COSINE_EPS, launch_cpp)
    np.testing.assert_allclose(w_f, w_x, rtol=1e-12, atol=1e-12)
    want = addressing.address_backward(dw, cache_x)
    for got in (addressing.address_backward(dw, cache_f),
                kernels.address_backward(dw, cache_x, launch=launch_cpp)):
        for f, p in zip(got, want):
            np.testing.assert_allclose(f, p, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model,R,placement", [("flmn", 1, "product"), ("flmn", 1, "inside"),
                                               ("mann", 1, "product"), ("mann", 4, "product")])
def test_episode_through_the_kernels_on_cpu_equals_xp(monkeypatch, model, R, placement):
    """A whole episode, forward and backward, on the CuPy path with every kernel body run by
    g++: the same loss, logits and gradients as the plain xp code (float64)."""
    cfg = ModelConfig(model=model, reads=R, slots=6, cosine_eps=placement, **TINY)
    p, x, y = tiny_episode(cfg, seed=2)
    want = loss_and_grads(p, x, y, cfg)
    launched = set()

    def cpp_kernel(spec):
        n_in = len(spec.in_params.split(","))

        def run(*arrays):
            launched.add(spec)
            launch_cpp(spec, arrays[:n_in], arrays[n_in:])
        return run

    monkeypatch.setitem(levels._held, "numpy", levels.Level(
        "elementwise", elementwise_ops=True,
        launch=lambda spec, ins, outs: cpp_kernel(spec)(*ins, *outs)))
    got = loss_and_grads(p, x, y, cfg)
    not_used = {("mann", 1): {kernels.WRITE_ADD},    # MANN has no label write; R > 1: no one-head
                ("mann", 4): {kernels.WRITE_ADD, kernels.WRITE}}                  # write
    step_level = {kernels.LSTM_FORWARD_SUM, kernels.LSTM_BACKWARD_SUM, kernels.ADAM}
    assert launched == set(kernels.SPECS) - step_level - not_used.get((model, R), set())
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(got[2][k], want[2][k], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 1), ("mann", 4)])
def test_stack_through_the_kernels_on_cpu_equals_models_alone(monkeypatch, model, R):
    """A stack of 3 models (params (3, ...), episodes (3, B, T, D)) on the CuPy path, every
    kernel body run by g++ on the (3 B, ...) episode arrays the stack hands them: each model's
    loss, logits and gradients are those of the plain xp code for that model alone (float64)."""
    cfg = ModelConfig(model=model, reads=R, slots=6, **TINY)
    alone = [tiny_episode(cfg, seed=s) for s in range(3)]
    want = [loss_and_grads(p, x, y, cfg) for p, x, y in alone]
    params = stack_params([p for p, _, _ in alone])
    x, y = (np.stack([a[i] for a in alone]) for i in (1, 2))

    def cpp_kernel(spec):
        n_in = len(spec.in_params.split(","))
        return lambda *arrays: launch_cpp(spec, arrays[:n_in], arrays[n_in:])

    monkeypatch.setitem(levels._held, "numpy", levels.Level(
        "elementwise", elementwise_ops=True,
        launch=lambda spec, ins, outs: cpp_kernel(spec)(*ins, *outs)))
    loss, logits, grads = loss_and_grads(params, x, y, cfg)
    for s, (loss_s, logits_s, grads_s) in enumerate(want):
        np.testing.assert_allclose(loss[s], loss_s, rtol=1e-12)
        np.testing.assert_allclose(logits[s], logits_s, rtol=1e-10, atol=1e-12)
        for k in grads_s:
            np.testing.assert_allclose(grads[k][s], grads_s[k], rtol=1e-8, atol=1e-12)


def test_step_kernels_build_all_launches_every_kernel():
    """Start-up (backend._start_cupy) launches each memory-step kernel once in each float type,
    for FLMN and MANN with both add vectors, here through the CPU build of the same source."""
    from kernel_harness import launch_raw_cpp
    launched = step_kernels.build_all(np, launch=launch_raw_cpp)
    assert set(launched) == {(s.name, d) for s in step_kernels.SPECS for d in step_kernels.CTYPES}
    cfgs = {(c.model, c.mann_add) for c in step_kernels.STARTUP_CONFIGS}
    assert cfgs == {("flmn", "separate"), ("mann", "separate"), ("mann", "key")}
    for cfg in step_kernels.STARTUP_CONFIGS:     # the tiny configs' memories are the models'
        real = ModelConfig(model=cfg.model, reads=cfg.reads, mann_add=cfg.mann_add, slots=3,
                           width=2)
        want = real.memory.initial_memory(real, 2, np, "float64")
        got = step_kernels._zero_memory(cfg, 2, np, "float64")
        assert got._fields == want._fields and [a.shape for a in got] == [a.shape for a in want]


def test_build_all_runs_every_kernel():
    calls = []

    def counting(spec, inputs, outputs):
        calls.append((spec, inputs[0].dtype))
        launch_cpp(spec, inputs, outputs)

    kernels.build_all(np, launch=counting)
    assert {(s, d) for s in kernels.SPECS for d in (np.dtype(np.float32), np.dtype(np.float64))} == set(calls)


@pytest.mark.parametrize("value,level", [(None, "step"), ("step", "step"),
                                         ("elementwise", "elementwise"), ("0", "xp")])
def test_flmn_fused_picks_cupys_level_at_start_up(monkeypatch, value, level):
    from flmn_np.core.backend import cupy_level_from_env
    if value is None:
        monkeypatch.delenv("FLMN_FUSED", raising=False)
    else:
        monkeypatch.setenv("FLMN_FUSED", value)
    held = cupy_level_from_env()
    assert held.name == level and held.elementwise_ops == (level != "xp")
    assert levels.name(np.zeros(2)) == "xp"                  # NumPy: the plain code by default
    monkeypatch.setenv("FLMN_FUSED", "0")                    # read at start-up only
    assert levels.name(np.zeros(2)) == "xp"


def test_an_unknown_level_is_refused_in_one_line(monkeypatch):
    from flmn_np.core.backend import cupy_level_from_env
    monkeypatch.setenv("FLMN_FUSED", "1")
    with pytest.raises(BackendError, match="FLMN_FUSED='1' is not one of '0', 'elementwise'") as e:
        cupy_level_from_env()
    assert "\n" not in str(e.value)


def test_a_level_is_held_for_a_block_and_restored():
    """levels.use_level sets one backend's level inside a block only; the ops of the reading
    path show their plain form and name their kernel (levels.elementwise_form)."""
    assert levels.name(np.zeros(1)) == "xp" and levels.of(np.zeros(1)) == levels.PLAIN
    with levels.use_level("numpy", "elementwise") as held:
        assert levels.elementwise(np.zeros(1)) and held.name == "elementwise"
        assert not levels.step(np.zeros(1))
    assert levels.of(np.zeros(1)) == levels.PLAIN
    assert lstm.lstm_cell_forward.plain.__module__ == "flmn_np.core.lstm"
    assert lstm.lstm_cell_forward.fused is kernels.lstm_cell_forward


# ------------------------------------------------------------------ the checks can fail

@pytest.mark.parametrize("spec,old,new", [
    (kernels.LSTM_BACKWARD, "dc_prev = dc_total * f;", "dc_prev = dc_total;"),
    (kernels.LSTM_BACKWARD, "dz_i = dc_total * g * i_ * ((T)1 - i_);", "dz_i = dc_total * g * i_;"),
    (kernels.LSTM_FORWARD, "c = f * c_prev + i_ * g;", "c = c_prev + i_ * g;"),
    (kernels.WRITE, "M_prev * keep", "M_prev"),
    (kernels.WRITE_ADD, "M_prev + w * a", "M_prev + a"),
    (kernels.INTERFACE_FORWARD, "gate != (T)0 ?", "gate == (T)0 ?"),
    (kernels.SIGMOID_BACKWARD, "dy * y * ((T)1 - y)", "dy * y"),
    (kernels.TANH_BACKWARD, "dy * ((T)1 - y * y)", "dy"),
    (kernels.WRITE_WEIGHTS, "w_lu_prev + g_w * diff", "w_lu_prev + diff"),
    (kernels.USAGE, "gamma * w_u_prev", "w_u_prev"),
    (kernels.ADDRESS_FORWARD, "denom = P + eps;", "denom = P + (T)1e-2;"),
    (kernels.ADDRESS_FORWARD, "K = dot / denom;", "K = dot;"),
    (kernels.ADDRESS_BACKWARD, "w * (dw - s) / denom", "w * dw / denom"),
    (kernels.ADDRESS_BACKWARD, "E = dK_scaled * K * P;", "E = dK_scaled * K;"),
    (kernels.COSINE_CORRECTION, "sum_E / (sq_norm + tiny) * x", "sum_E * x"),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_dropped_factor_is_caught(spec, old, new, dtype):
    launch = mutated(spec, old, new)
    if spec in (kernels.LSTM_FORWARD, kernels.LSTM_BACKWARD):
        args = lstm_inputs(dtype)
        err = max_error(lstm_outputs(*args, launch=launch), lstm_outputs(*args))
    else:   # the largest error over every memory unit that launches spec
        units = memory_units(dtype).values()
        err = max(max_error(run(launch), run(None)) for run in units
                  if spec in [c[0] for c in _launched(run)])
    assert err > 1e3 * TOL[dtype]


def _launched(run):
    calls = []
    run(lambda spec, inputs, outputs: (calls.append((spec,)), launch_cpp(spec, inputs, outputs)))
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_swapped_gate_slices_are_caught(dtype, monkeypatch):
    """The wrappers cut z, ifo and dz with kernels.gate_slices; swapping its i and f blocks
    (as a wrong slice in a wrapper would) must break the comparison."""
    good = kernels.gate_slices

    def swapped(x, H):
        blocks = good(x, H)
        return (blocks[1], blocks[0], *blocks[2:])

    args = lstm_inputs(dtype)
    plain = lstm_outputs(*args)
    monkeypatch.setattr(kernels, "gate_slices", swapped)
    assert max_error(lstm_outputs(*args, launch=launch_cpp), plain) > 1e3 * TOL[dtype]


# ------------------------------------------------------------------ clean errors at startup

def test_cupy_without_gpu_is_one_line():
    if gpu_usable:
        pytest.skip("a GPU is usable here")
    with pytest.raises(BackendError) as e:
        get_xp("cupy")
    msg = str(e.value)
    assert msg.startswith("--backend cupy was requested but") and "\n" not in msg
    assert "--backend numpy" in msg or "pip install" in msg


@pytest.mark.parametrize("error,hint", [
    (RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open "
                  "shared object file: No such file or directory"), "cupy-cuda12x[ctk]"),
    (type("CompileException", (Exception,), {})(
        "default_program(1): catastrophic error: cannot open source file \"cuda_fp16.h\""),
     "cupy-cuda12x[ctk]"),
    (type("CompileException", (Exception,), {})(
        "default_program(17): error: identifier \"c_prev_t\" is undefined\n1 error"),
     "FLMN_FUSED=0"),
    (RuntimeError("Failed to find CUDA headers. Please install CUDA Toolkit or "
                  "`cupy-cuda12x[ctk]`, or set CUDA_PATH"), "cupy-cuda12x[ctk]"),
    (type("CUDADriverError", (Exception,), {})("CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the "
                                               "provided PTX was compiled with an unsupported toolchain"),
     "driver"),
])
def test_startup_failures_say_what_to_do(monkeypatch, error, hint):
    """Whatever CuPy raises on its first compile or launch becomes one BackendError line."""
    from flmn_np.core import backend
    monkeypatch.setattr(backend, "cupy_status", lambda: (True, "CuPy on 1 GPU(s)"))

    def failing():
        raise error
    monkeypatch.setattr(backend, "_start_cupy", failing)
    with pytest.raises(BackendError) as e:
        get_xp("cupy")
    msg = str(e.value)
    assert "\n" not in msg and hint in msg and msg.startswith("--backend cupy was requested but")
    assert hint in cupy_startup_error(error)


# --------------------------------------------------------------------------- on a GPU

@pytest.fixture
def cp():
    return get_xp("cupy")


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_cell_fused_on_gpu_equals_xp(cp, dtype):
    args = [cp.asarray(a) for a in lstm_inputs(dtype)]
    with levels.use_level("cupy", "step"):
        assert levels.elementwise(args[0])
        fused = lstm_outputs(*args, launch=kernels.launch_cupy)
    with levels.use_level("cupy", "xp"):
        plain = lstm_outputs(*args)
    for f, p in zip(fused, plain):
        np.testing.assert_allclose(to_numpy(f), to_numpy(p), rtol=TOL[dtype], atol=TOL[dtype])


@needs_gpu
def test_write_fused_on_gpu_equals_xp(cp):
    M, w, a, erase = (cp.asarray(x) for x in write_inputs(np.float64))
    with levels.use_level("cupy", "elementwise"):
        M_f, _ = memory.write_forward(M, w, a, erase=erase)
    with levels.use_level("cupy", "xp"):
        M_x, _ = memory.write_forward(M, w, a, erase=erase)
    np.testing.assert_allclose(to_numpy(M_f), to_numpy(M_x), rtol=1e-12, atol=1e-14)


@needs_gpu
@pytest.mark.parametrize("level", ["elementwise", "step"])
@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 1), ("mann", 4)])
def test_episode_fused_on_gpu_equals_numpy(cp, model, R, level):
    cfg = ModelConfig(model=model, reads=R, slots=6, **TINY)
    p, x, y = tiny_episode(cfg, seed=2)
    ref = loss_and_grads(p, x, y, cfg)
    with levels.use_level("cupy", level):
        out = loss_and_grads({k: cp.asarray(v) for k, v in p.items()}, cp.asarray(x),
                             cp.asarray(y), cfg)
    np.testing.assert_allclose(to_numpy(out[1]), ref[1], rtol=1e-10, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(to_numpy(out[2][k]), ref[2][k], rtol=1e-8, atol=1e-12)
