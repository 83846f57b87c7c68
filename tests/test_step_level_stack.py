"""A stack of models at CuPy's 'step' level, every kernel run from its source on the CPU
(tests/kernel_harness.step_level_on_cpu), against each model trained alone by the plain xp code:
training steps (episode forward, BPTT, clipping and Adam per model, one lr per model) for FLMN,
MANN R = 1 and R = 4, G = 1, 2, 5, with G B = 65 episodes in one case (two blocks of 64
threads, the second holding one episode). And the flat Adam buffer: after a step every parameter
is still a view of it, so an update that lands in a copy fails here."""
import numpy as np
import pytest

from flmn_np.core import kernels, levels, step_kernels
from flmn_np.core.backend import cupy_status
from flmn_np.core.models import ModelConfig, init_params, loss_and_grads, stack_params
from flmn_np.core.optim import Adam, clip_by_global_norm
from flmn_np.gradcheck import TINY

from kernel_harness import step_level_on_cpu
from model_helpers import synthetic_episodes

CONFIGS = {"flmn": dict(model="flmn"), "mann-R1": dict(model="mann", reads=1),
           "mann-R4": dict(model="mann", reads=4)}
LRS = (1e-2, 3e-3, 1e-3, 5e-3, 2e-2)
CLIP = 0.5            # every step clips: the per-model norm matters
STEPS = 3
# Against the plain xp code: float64 each parameter within 1e-12 of its largest entry. float32:
# the kernels sum in another order than the xp code (a rounding of ~1e-7 per operation), and
# Adam divides by sqrt(v), so an entry whose gradient is near zero takes an update of size lr
# from rounding alone: within 1e-4 of the largest entry after 3 steps (measured: at most 2e-5).
# Against the same model alone at the 'step' level: bit for bit in both dtypes (each model's
# slice of a batched product is the GEMM of its own product; each episode is one thread).
TOL = {"float64": 1e-12, "float32": 1e-4}


def cfg_of(name):
    return ModelConfig(slots=6, **TINY, **CONFIGS[name])


def episodes_of(cfg, G, B, dtype):
    """STEPS batches per model: x (STEPS, G, B, T, D), y (STEPS, G, B, T)."""
    rng = np.random.default_rng(5)
    data = [[synthetic_episodes(rng, B, C=cfg.n_classes, S=3, D=cfg.input_size)
             for _ in range(G)] for _ in range(STEPS)]
    x = np.array([[xs.astype(dtype) for xs, _ in step] for step in data])
    y = np.array([[ys for _, ys in step] for step in data])
    return x, y


def train_alone(cfg, s, x, y, dtype):
    """Model s trained alone (no model axis), at whatever level is in force."""
    params = init_params(cfg, s, np, dtype)
    opt = Adam(params, lr=LRS[s])
    for i in range(STEPS):
        _, _, grads = loss_and_grads(params, x[i, s], y[i, s], cfg)
        opt.step(params, clip_by_global_norm(grads, CLIP)[0])
    return params


def train_stack(cfg, G, x, y, dtype):
    """The G models as one stack; returns (params, opt, losses per step)."""
    params = stack_params([init_params(cfg, s, np, dtype) for s in range(G)])
    opt = Adam(params, lr=list(LRS[:G]), lead=(G,))
    losses = []
    for i in range(STEPS):
        loss, _, grads = loss_and_grads(params, x[i], y[i], cfg)
        opt.step(params, clip_by_global_norm(grads, CLIP, (G,))[0])
        losses.append(loss)
    return params, opt, losses


def assert_views_of_flat_buffer(params, opt):
    """Every params[k] shares memory with the optimizer's flat buffer and holds its slice."""
    assert opt.p is not None, "the 'step' level's Adam made no flat params buffer"
    for k, (a, b) in opt.offsets.items():
        assert np.shares_memory(params[k], opt.p), f"{k} is not a view of the flat buffer"
        np.testing.assert_array_equal(np.reshape(opt.p[..., a:b], params[k].shape), params[k])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("G,B", [(1, 3), (2, 3), (5, 13)])
def test_stack_at_the_step_level_trains_as_each_model_alone(G, B, name, dtype):
    cfg = cfg_of(name)
    x, y = episodes_of(cfg, G, B, dtype)
    alone = [train_alone(cfg, s, x, y, dtype) for s in range(G)]
    with pytest.MonkeyPatch.context() as mp:
        launched = step_level_on_cpu(mp)
        params, opt, _ = train_stack(cfg, G, x, y, dtype)
        alone_step = [train_alone(cfg, s, x, y, dtype) for s in range(G)]
    assert {f"{cfg.model}_step_forward", f"{cfg.model}_step_backward",
            "flmn_lstm_cell_forward_sum", "flmn_lstm_cell_backward_sum", "flmn_adam"} <= launched
    assert_views_of_flat_buffer(params, opt)
    for s in range(G):
        for k in params:
            want = alone[s][k]
            scale = np.abs(want).max()
            assert np.abs(want - init_params(cfg, s, np, dtype)[k]).max() > 1e-4, "did not train"
            assert np.abs(params[k][s] - want).max() <= TOL[dtype] * scale, (s, k)
            np.testing.assert_array_equal(params[k][s], alone_step[s][k])


def test_an_update_into_a_copy_fails_the_checks():
    """Adam's kernel writing a copy of the params buffer leaves every parameter where it began
    (the comparison above fails); params that are not views of the buffer fail the view check."""
    cfg = cfg_of("flmn")
    x, y = episodes_of(cfg, 2, 3, "float64")
    init = stack_params([init_params(cfg, s, np, "float64") for s in range(2)])
    with pytest.MonkeyPatch.context() as mp:
        step_level_on_cpu(mp)
        update = kernels.adam_update
        mp.setattr(kernels, "adam_update", lambda p, *a, **k: update(p.copy(), *a, **k))
        params, _, _ = train_stack(cfg, 2, x, y, "float64")
    for k in params:
        np.testing.assert_array_equal(params[k], init[k])
    with pytest.MonkeyPatch.context() as mp:
        step_level_on_cpu(mp)
        params, opt, _ = train_stack(cfg, 2, x, y, "float64")
    assert_views_of_flat_buffer(params, opt)
    with pytest.raises(AssertionError, match="not a view"):
        assert_views_of_flat_buffer({k: v.copy() for k, v in params.items()}, opt)


def test_the_step_level_has_no_stack_fallback():
    """A stack takes the memory-step kernels (no launch of the elementwise level's kernels)."""
    cfg = cfg_of("mann-R4")
    x, y = episodes_of(cfg, 2, 3, "float64")
    with pytest.MonkeyPatch.context() as mp:
        launched = step_level_on_cpu(mp)
        train_stack(cfg, 2, x, y, "float64")
    assert "mann_step_forward" in launched
    assert not launched & {"flmn_address_forward", "flmn_write_forward", "flmn_usage"}, launched


gpu_usable, gpu_reason = cupy_status()


@pytest.mark.skipif(not gpu_usable, reason=gpu_reason)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_stack_at_the_step_level_on_gpu_trains_as_each_model_alone(name):
    """The same on CuPy, float64, and every parameter a view of the flat buffer on the device."""
    import cupy
    cfg = cfg_of(name)
    G, B = 5, 13
    x, y = episodes_of(cfg, G, B, "float64")
    alone = [train_alone(cfg, s, x, y, "float64") for s in range(G)]
    params = stack_params([init_params(cfg, s, cupy, "float64") for s in range(G)])
    opt = Adam(params, lr=list(LRS[:G]), lead=(G,))
    assert levels.step(params["W_lstm"]) and step_kernels.supported(cfg)
    for i in range(STEPS):
        _, _, grads = loss_and_grads(params, cupy.asarray(x[i]), cupy.asarray(y[i]), cfg)
        opt.step(params, clip_by_global_norm(grads, CLIP, (G,))[0])
    lo, hi = opt.p.data.ptr, opt.p.data.ptr + opt.p.nbytes
    for k, (a, b) in opt.offsets.items():
        assert lo <= params[k].data.ptr < hi, f"{k} is not a view of the flat buffer"
        for s in range(G):
            want = alone[s][k]
            assert np.abs(cupy.asnumpy(params[k][s]) - want).max() <= 1e-12 * np.abs(want).max()
