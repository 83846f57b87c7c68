"""A stack of G independent models (params (G, ...), episodes (G, B, T, D)) against the same
models alone: forward, gradients, finite differences and the plain reference per model, and 20
clipped Adam steps with one learning rate per model."""
import numpy as np
import pytest

from flmn_np.core.backend import asarray, get_xp, to_numpy
from flmn_np.core.models import (forward, init_params, loss_and_grads, model_params,
                                 stack_params)
from flmn_np.core.optim import (Adam, clip_by_global_norm, model_state_dict, stack_state_dicts)
from flmn_np.gradcheck import rel_error, tiny_episode
from model_helpers import reference_logits, synthetic_episodes, tiny

NAMES = ["flmn", "mann-R1", "mann-R4"]
G = 3


def _stack(cfg, seeds, xp, batch_size=2, steps=8):
    """G tiny float64 models and their own episodes, alone (host) and stacked (on xp)."""
    alone = [tiny_episode(cfg, seed=s, batch_size=batch_size, steps=steps) for s in seeds]
    params = stack_params([{k: asarray(v, xp) for k, v in a[0].items()} for a in alone])
    x = asarray(np.stack([a[1] for a in alone]), xp)
    y = asarray(np.stack([a[2] for a in alone]), xp)
    return alone, params, x, y


@pytest.mark.parametrize("name", NAMES)
def test_stack_forward_and_grads_equal_models_alone(backend, name):
    xp = get_xp(backend)
    cfg = tiny(name)
    alone, params, x, y = _stack(cfg, range(G), xp)
    loss, logits, grads = loss_and_grads(params, x, y, cfg)
    assert loss.shape == (G,) and logits.shape == (G, 2, 8, cfg.n_classes)
    for s, (p, xs, ys) in enumerate(alone):
        loss_s, logits_s, grads_s = loss_and_grads(p, xs, ys, cfg)
        assert float(to_numpy(loss)[s]) == pytest.approx(float(loss_s), rel=1e-13)
        np.testing.assert_allclose(to_numpy(logits)[s], logits_s, rtol=1e-12, atol=1e-13)
        for k in p:
            np.testing.assert_allclose(to_numpy(grads[k])[s], grads_s[k], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_stack_matches_plain_reference_per_model(name):
    """Every model of the stack against docs/model.md written out naively for its episodes."""
    cfg = tiny(name)
    alone, params, x, y = _stack(cfg, range(G), np, steps=14)
    _, logits = forward(params, x, y, cfg)
    for s, (p, xs, ys) in enumerate(alone):
        for b in range(2):
            np.testing.assert_allclose(logits[s, b], reference_logits(p, xs[b], ys[b], cfg),
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_stack_gradients_directional_per_model(backend, name):
    """Centred differences of the summed loss along a random direction in one model's
    parameters only: that model's gradient is right, and no other model's loss moves."""
    xp = get_xp(backend)
    cfg = tiny(name)
    _, params, x, y = _stack(cfg, range(G), xp)
    _, _, grads = loss_and_grads(params, x, y, cfg)
    rng, h = np.random.default_rng(7), 1e-6
    for s in range(G):
        for k in params:
            d = np.zeros(params[k].shape)
            d[s] = rng.standard_normal(d.shape[1:])
            moved = [forward({**params, k: params[k] + sign * h * asarray(d, xp)}, x, y, cfg)[0]
                     for sign in (1, -1)]
            plus, minus = (to_numpy(m) for m in moved)
            numeric = (plus[s] - minus[s]) / (2 * h)
            analytic = float(np.sum(to_numpy(grads[k])[s] * d[s]))
            assert rel_error(analytic, numeric) < 1e-6, (s, k, analytic, numeric)
            others = np.arange(G) != s
            np.testing.assert_array_equal(plus[others], minus[others])


def _train(params, opt, episodes, cfg, clip, lead=()):
    for x, y in episodes:
        _, _, grads = loss_and_grads(params, x, y, cfg)
        opt.step(params, clip_by_global_norm(grads, clip, lead)[0])
    return params


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_stack_trains_as_models_alone(backend, name, dtype):
    """20 Adam steps, clipped per model (clip 0.5: every step clips), lr per model: each model
    of the stack ends equal to the same seed trained alone. On NumPy (and array_api_strict, which
    runs NumPy) bit for bit in both dtypes: each model's slice of a batched product is the same
    GEMM as the model's own product, and every sum runs over the same elements in the same order.
    On CuPy a batched cuBLAS product may choose another kernel and order its sums otherwise:
    float64 within 1e-12, float32 within 1e-5 of the largest parameter (a rounding of ~1e-7 per
    step, carried forward by Adam's division by sqrt(v))."""
    xp = get_xp(backend)
    cfg = tiny(name)
    lrs = [1e-2, 3e-3, 1e-3]
    rng = np.random.default_rng(11)
    data = [[synthetic_episodes(rng, 2, C=cfg.n_classes, S=3, D=cfg.input_size)
             for _ in range(20)] for _ in range(G)]

    def on_xp(a):
        return asarray(a.astype(dtype) if a.dtype.kind == "f" else a, xp)

    alone = []
    for s in range(G):
        p = {k: on_xp(v) for k, v in init_params(cfg, s, np, dtype).items()}
        episodes = [(on_xp(x), on_xp(y)) for x, y in data[s]]
        alone.append(_train(p, Adam(p, lr=lrs[s]), episodes, cfg, 0.5))
    params = stack_params([{k: on_xp(v) for k, v in init_params(cfg, s, np, dtype).items()}
                           for s in range(G)])
    episodes = [(on_xp(np.stack([data[s][i][0] for s in range(G)])),
                 on_xp(np.stack([data[s][i][1] for s in range(G)]))) for i in range(20)]
    _train(params, Adam(params, lr=lrs, lead=(G,)), episodes, cfg, 0.5, lead=(G,))
    for s in range(G):
        for k in params:
            got, want = to_numpy(params[k])[s], to_numpy(alone[s][k])
            assert np.abs(want - to_numpy(init_params(cfg, s, np, dtype)[k])).max() > 1e-3
            if backend != "cupy":
                np.testing.assert_array_equal(got, want)
            elif dtype == "float64":
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
            else:
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_stack_splits_into_and_assembles_from_single_models():
    """Model s's params and Adam state out of a stack are a one-model run's; G of them make a
    stack that steps on exactly as the original stack."""
    cfg = tiny("flmn")
    _, params, x, y = _stack(cfg, range(G), np)
    opt = Adam(params, lr=[1e-2, 3e-3, 1e-3], lead=(G,))
    _train(params, opt, [(x, y)] * 2, cfg, 0.5, lead=(G,))
    singles = [(model_params(params, s), model_state_dict(opt.state_dict(), s)) for s in range(G)]
    for s, (p, state) in enumerate(singles):
        one = Adam(p, lr=[1e-2, 3e-3, 1e-3][s])
        one.load_state_dict(state)
        assert one.t == 2 and one.m.shape == (opt.m.shape[1],)
        np.testing.assert_array_equal(one.m, opt.m[s])
    rebuilt = stack_params([p for p, _ in singles])
    opt2 = Adam(rebuilt, lr=[1e-2, 3e-3, 1e-3], lead=(G,))
    opt2.load_state_dict(stack_state_dicts([st for _, st in singles]))
    _train(params, opt, [(x, y)], cfg, 0.5, lead=(G,))
    _train(rebuilt, opt2, [(x, y)], cfg, 0.5, lead=(G,))
    for k in params:
        np.testing.assert_array_equal(rebuilt[k], params[k])
    with pytest.raises(ValueError, match="same number of steps"):
        stack_state_dicts([singles[0][1], {**singles[1][1], "t": 5}])
