"""Optimizers and clipping against their textbook formulas, on every backend."""
import numpy as np
import pytest

from flmn_np.core.backend import asarray, get_xp, to_numpy
from flmn_np.core.optim import Adam, RMSProp, clip_by_global_norm, global_norm, make_optimizer


def _grads(step):
    rng = np.random.default_rng(step)
    return {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}


def test_adam_matches_textbook(backend):
    xp = get_xp(backend)
    p0 = {"a": np.ones((3, 2)), "b": np.zeros(4)}
    params = {k: asarray(v, xp) for k, v in p0.items()}
    opt = Adam(params, lr=0.01)
    ref, m, v = {k: v.copy() for k, v in p0.items()}, {k: 0.0 for k in p0}, {k: 0.0 for k in p0}
    for t in range(1, 4):
        g = _grads(t)
        opt.step(params, {k: asarray(x, xp) for k, x in g.items()})
        for k in p0:
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            ref[k] = ref[k] - 0.01 * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
    for k in p0:
        np.testing.assert_allclose(to_numpy(params[k]), ref[k], rtol=1e-6, atol=1e-9)


def test_rmsprop_matches_textbook(backend):
    xp = get_xp(backend)
    params = {"a": asarray(np.ones((3, 2)), xp), "b": asarray(np.zeros(4), xp)}
    opt = RMSProp(params)
    ref = {"a": np.ones((3, 2)), "b": np.zeros(4)}
    ms, mom = {k: 0.0 for k in ref}, {k: 0.0 for k in ref}
    for t in range(1, 4):
        g = _grads(t)
        opt.step(params, {k: asarray(x, xp) for k, x in g.items()})
        for k in ref:
            ms[k] = 0.95 * ms[k] + 0.05 * g[k] ** 2
            mom[k] = 0.9 * mom[k] + 1e-4 * g[k] / np.sqrt(ms[k] + 1e-10)
            ref[k] = ref[k] - mom[k]
    for k in ref:
        np.testing.assert_allclose(to_numpy(params[k]), ref[k], rtol=1e-10, atol=1e-12)


def test_clip_by_global_norm(backend):
    xp = get_xp(backend)
    g = {k: asarray(v, xp) for k, v in _grads(0).items()}
    norm = float(to_numpy(global_norm(g)))
    assert norm == pytest.approx(np.sqrt(sum(np.sum(v ** 2) for v in _grads(0).values())))
    clipped, before = clip_by_global_norm(g, norm / 2)
    assert float(to_numpy(before)) == pytest.approx(norm)
    assert float(to_numpy(global_norm(clipped))) == pytest.approx(norm / 2, rel=1e-5)
    same, _ = clip_by_global_norm(g, 2 * norm)
    np.testing.assert_allclose(to_numpy(same["a"]), to_numpy(g["a"]))
    off, _ = clip_by_global_norm(g, 0)
    assert off is g


def test_state_dict_round_trip_continues_identically():
    params = {"a": np.ones(3)}
    opt = Adam(params)
    opt.step(params, {"a": np.array([1.0, -2.0, 3.0])})
    copy = {"a": params["a"].copy()}
    opt2 = Adam(copy)
    opt2.load_state_dict({k: np.array(v, copy=True) for k, v in opt.state_dict().items()})
    for o, p in ((opt, params), (opt2, copy)):
        o.step(p, {"a": np.array([0.5, 0.5, -1.0])})
    np.testing.assert_array_equal(params["a"], copy["a"])


def test_make_optimizer():
    params = {"a": np.ones(2)}
    assert make_optimizer("adam", params).lr == 1e-3
    assert make_optimizer("rmsprop", params).lr == 1e-4
    assert make_optimizer("adam", params, lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("sgd", params)


def test_clip_by_global_norm_per_model(backend):
    """A stack of 3 models: each model's norm and clipping are its own, as if alone."""
    xp = get_xp(backend)
    singles = [_grads(s) for s in range(3)]
    singles[1] = {k: 100 * v for k, v in singles[1].items()}      # only this one clips at 10
    stacked = {k: asarray(np.stack([g[k] for g in singles]), xp) for k in singles[0]}
    clipped, norms = clip_by_global_norm(stacked, 10.0, lead=(3,))
    assert norms.shape == (3,)
    for s, g in enumerate(singles):
        one, norm = clip_by_global_norm({k: asarray(v, xp) for k, v in g.items()}, 10.0)
        assert float(to_numpy(norms)[s]) == pytest.approx(float(to_numpy(norm)), rel=1e-12)
        for k in g:
            np.testing.assert_allclose(to_numpy(clipped[k])[s], to_numpy(one[k]), rtol=1e-12)
    assert float(to_numpy(global_norm(clipped, lead=(3,)))[1]) == pytest.approx(10.0, rel=1e-5)


def test_adam_lr_per_model_matches_models_alone(backend):
    """Adam on a stack with one lr per model steps each model as Adam alone with its lr."""
    xp = get_xp(backend)
    lrs = [0.1, 0.01, 0.001]
    alone = [{"a": asarray(np.ones((3, 2)), xp), "b": asarray(np.zeros(4), xp)} for _ in lrs]
    opts = [Adam(p, lr=lr) for p, lr in zip(alone, lrs)]
    stack = {"a": asarray(np.ones((3, 3, 2)), xp), "b": asarray(np.zeros((3, 4)), xp)}
    opt = Adam(stack, lr=lrs, lead=(3,))
    for t in range(1, 4):
        g = [_grads(10 * t + s) for s in range(3)]
        for p, o, gs in zip(alone, opts, g):
            o.step(p, {k: asarray(v, xp) for k, v in gs.items()})
        opt.step(stack, {k: asarray(np.stack([gs[k] for gs in g]), xp) for k in g[0]})
    for s, p in enumerate(alone):
        for k in p:
            np.testing.assert_allclose(to_numpy(stack[k])[s], to_numpy(p[k]), rtol=1e-14)
