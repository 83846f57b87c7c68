"""Every op pair against centred finite differences, on every backend (float64, tiny shapes)."""
import math
from functools import partial

import numpy as np
import pytest

from flmn_np.core import addressing
from flmn_np.core import lstm
from flmn_np.core import memory
from flmn_np.core import ops
from flmn_np.core.backend import asarray, get_xp, to_numpy
from flmn_np.core.models import ModelConfig
from gradients import check_op

TOL = 1e-7
B, N, W, H = 2, 6, 3, 5


def rand(*shape, seed=0, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def probs(*shape, seed=0):
    """Rows that sum to 1 along the last axis (like read/write weights)."""
    e = np.exp(rand(*shape, seed=seed))
    return e / e.sum(-1, keepdims=True)


def test_lstm_cell(backend):
    xp = get_xp(backend)
    errs = check_op(lstm.lstm_cell_forward, lstm.lstm_cell_backward,
                    [rand(B, 4 * H, seed=1), rand(B, H, seed=2)], xp)
    assert max(errs) < TOL, errs


@pytest.mark.parametrize("placement", addressing.COSINE_EPS_PLACEMENTS)
@pytest.mark.parametrize("R", [1, 3])
def test_cosine(backend, R, placement):
    xp = get_xp(backend)
    M = rand(B, N, W, seed=2)
    # Empty slots (1e-6, where the epsilon dominates the norm) are too curved for h = 1e-6
    # differences in M itself; the episode checks cover them through the parameters.
    errs = check_op(partial(addressing.cosine_forward, eps_placement=placement),
                    addressing.cosine_backward, [rand(B, R, W, seed=1), M], xp)
    assert max(errs) < TOL, errs


def test_cosine_values(backend):
    """K is the cosine: 1 for parallel vectors, -1 for opposite, in [-1, 1] always."""
    xp = get_xp(backend)
    k = rand(B, 1, W, seed=3)
    M = np.concatenate([3 * k, -k, rand(B, N - 2, W, seed=4)], axis=1)
    K = to_numpy(addressing.cosine_forward(asarray(k, xp), asarray(M, xp))[0])
    np.testing.assert_allclose(K[:, 0, :2], [[1, -1]] * B, atol=1e-6)
    assert np.all(np.abs(K) <= 1)


def test_cosine_eps_placement_on_the_initial_fill(backend):
    """A slot holding the 1e-6 fill: 'product' gives its true cosine with the key, 'inside'
    shrinks it by |M| / sqrt(|M|^2 + 1e-8), about 16x at W = 40."""
    xp = get_xp(backend)
    k = rand(B, 1, 40, seed=5)
    M = np.full((B, 3, 40), 1e-6)
    true = (k.sum(-1) / (np.linalg.norm(k, axis=-1) * np.sqrt(40)))[:, :, None]   # (B, 1, 1)
    K_prod = to_numpy(addressing.cosine_forward(asarray(k, xp), asarray(M, xp), "product")[0])
    K_in = to_numpy(addressing.cosine_forward(asarray(k, xp), asarray(M, xp), "inside")[0])
    m_norm = 1e-6 * np.sqrt(40)
    np.testing.assert_allclose(K_prod, np.broadcast_to(true, K_prod.shape), rtol=2e-3)
    shrink = m_norm / np.sqrt(m_norm ** 2 + 1e-8)
    np.testing.assert_allclose(K_in, K_prod * shrink, rtol=2e-3)
    assert 14 < 1 / shrink < 18


@pytest.mark.parametrize("R", [1, 2])
def test_address(backend, R):
    xp = get_xp(backend)
    errs = check_op(addressing.address_forward, addressing.address_backward,
                    [rand(B, R, W, seed=1), rand(B, N, W, seed=2)], xp)
    assert max(errs) < TOL, errs


@pytest.mark.parametrize("R", [1, 2])
def test_read(backend, R):
    xp = get_xp(backend)
    errs = check_op(addressing.read_forward, addressing.read_backward,
                    [probs(B, R, N, seed=1), rand(B, N, W, seed=2)], xp)
    assert max(errs) < TOL, errs


@pytest.mark.parametrize("R", [1, 2])
def test_write_weights(backend, R):
    xp = get_xp(backend)
    w_lu = np.zeros((B, R, N))
    w_lu[:, np.arange(R), np.arange(R)] = 1.0
    errs = check_op(partial(memory.write_weights_forward, w_lu_prev=asarray(w_lu, xp)),
                    memory.write_weights_backward,
                    [np.random.default_rng(0).random((B, R)), probs(B, R, N, seed=1)], xp)
    assert max(errs) < TOL, errs


@pytest.mark.parametrize("R,erase", [(1, True), (1, False), (2, True)])
def test_write(backend, R, erase):
    xp = get_xp(backend)
    lu = np.zeros((B, N))
    lu[:, 2] = 1.0
    erase_xp = asarray(lu, xp) if erase else None
    errs = check_op(partial(memory.write_forward, erase=erase_xp), memory.write_backward,
                    [rand(B, N, W, seed=1), probs(B, R, N, seed=2), rand(B, R, W, seed=3)], xp)
    assert max(errs) < TOL, errs


def test_write_erases_only_the_least_used_slot(backend):
    """M[t] = M[t-1](1 - w_lu) + w a: with w = 0 only the least-used row is cleared [eq 7]."""
    xp = get_xp(backend)
    M = rand(B, N, W, seed=1)
    lu = np.zeros((B, N))
    lu[0, 4] = lu[1, 0] = 1.0
    out = to_numpy(memory.write_forward(asarray(M, xp), asarray(np.zeros((B, 1, N)), xp),
                                        asarray(rand(B, 1, W), xp), erase=asarray(lu, xp))[0])
    expected = M * (1 - lu[:, :, None])
    np.testing.assert_allclose(out, expected)


def test_softmax_and_cross_entropy(backend):
    xp = get_xp(backend)
    errs = check_op(ops.softmax_forward, ops.softmax_backward, [rand(B, 4, 5, seed=1)], xp)
    errs += check_op(ops.softmax_bounded_forward, ops.softmax_backward,
                     [np.tanh(rand(B, 4, 5, seed=3))], xp)
    y = asarray(np.array([[0, 4, 2], [1, 1, 3]]), xp)
    errs += check_op(partial(ops.cross_entropy_forward, y=y), ops.cross_entropy_backward,
                     [rand(B, 3, 5, seed=2)], xp)
    assert max(errs) < TOL, errs


def test_softmax_bounded_equals_softmax(backend):
    xp = get_xp(backend)
    z = asarray(np.tanh(rand(B, 4, 5, seed=4)), xp)
    np.testing.assert_allclose(to_numpy(ops.softmax_bounded_forward(z)[0]),
                               to_numpy(ops.softmax_forward(z)[0]), rtol=1e-15, atol=0)


@pytest.mark.parametrize("n_tanh", [0, 4, 7])
def test_interface(backend, n_tanh):
    """tanh on the first n_tanh columns, the sigmoid on the rest, and their backward."""
    xp = get_xp(backend)
    heads = rand(B, 7, seed=5, scale=3.0)
    errs = check_op(partial(ops.interface_forward, n_tanh=n_tanh), ops.interface_backward,
                    [heads], xp)
    assert max(errs) < TOL, errs
    tanh_part, gates, _ = ops.interface_forward(asarray(heads, xp), n_tanh)
    np.testing.assert_allclose(to_numpy(tanh_part), np.tanh(heads[:, :n_tanh]), rtol=1e-14)
    np.testing.assert_allclose(to_numpy(gates), 1 / (1 + np.exp(-heads[:, n_tanh:])), rtol=1e-14)


def test_cross_entropy_value(backend):
    """Uniform logits give log C; the loss is the mean over B and T."""
    xp = get_xp(backend)
    loss, _ = ops.cross_entropy_forward(asarray(np.zeros((2, 3, 5)), xp), asarray(np.zeros((2, 3), dtype=np.int64), xp))
    assert float(to_numpy(loss)) == pytest.approx(np.log(5))


def test_previous_label_onehot(backend):
    xp = get_xp(backend)
    y = np.array([[2, 0, 1, 1], [0, 1, 2, 0]])
    prev = to_numpy(ops.previous_label_onehot(asarray(y, xp), 3, xp.float64))
    assert prev.shape == (2, 4, 3) and prev.dtype == np.float64
    assert np.all(prev[:, 0] == 0)
    np.testing.assert_array_equal(prev[:, 1:].argmax(-1), y[:, :-1])
    assert np.all(prev[:, 1:].sum(-1) == 1)


def test_matmul_helpers_equal_matmul(backend):
    xp = get_xp(backend)
    a, Wt, u = rand(3, 4, seed=1), rand(5, 4, seed=2), rand(2, 3, 4, seed=3)
    Wt_T = to_numpy(ops.transposed(asarray(Wt, xp)))
    np.testing.assert_array_equal(Wt_T, Wt.T)
    if backend == "numpy":   # its own row-major array, not a view of Wt: the fast GEMM layout
        assert Wt_T.flags.c_contiguous and not np.shares_memory(Wt_T, Wt)
    for R in (1, 3):
        w, v = rand(2, R, 6, seed=4), rand(2, R, 4, seed=5)
        np.testing.assert_allclose(to_numpy(ops.transpose_matmul(asarray(w, xp), asarray(v, xp))),
                                   np.swapaxes(w, 1, 2) @ v, atol=1e-12)


@pytest.mark.parametrize("lead", [(), (1,), (3,)])
def test_stacked_matmul_helpers(backend, lead):
    """per_model_matmul, model_major, time_major and transposed on a stack of len(lead) models:
    each model's episodes meet its own weights only."""
    xp = get_xp(backend)
    G, T, B, n, m = math.prod(lead), 4, 2, 5, 3
    W, b = rand(*lead, n, m, seed=1), rand(*lead, m, seed=2)
    a, seq = rand(G * B, n, seed=3), rand(T, G * B, n, seed=4)     # E = G B episodes, model-major
    Ws, bs = np.reshape(W, (G, n, m)), np.reshape(b, (G, m))
    want = np.concatenate([a[s * B:(s + 1) * B] @ Ws[s] + bs[s] for s in range(G)])
    got = ops.per_model_matmul(asarray(a, xp), asarray(W, xp), asarray(b, xp))
    np.testing.assert_allclose(to_numpy(got), want, atol=1e-12)
    mm = to_numpy(ops.model_major(asarray(seq, xp), lead))
    assert mm.shape == (*lead, T * B, n)
    for s in range(G):
        np.testing.assert_array_equal(np.reshape(mm, (G, T, B, n))[s], seq[:, s * B:(s + 1) * B])
    np.testing.assert_array_equal(to_numpy(ops.time_major(asarray(mm, xp), T)), seq)
    np.testing.assert_array_equal(to_numpy(ops.transposed(asarray(W, xp))), np.swapaxes(W, -1, -2))


def test_least_used_ties_and_order(backend):
    """Ascending usage, ties to the lowest index [FLMN eq 5; docs/model.md#flmn-step]; R one-hots."""
    xp = get_xp(backend)
    w_u = np.array([[0.5, 0.1, 0.1, 0.9, 0.1, 0.3],
                    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    lu1 = to_numpy(memory.least_used(asarray(w_u, xp), 1))
    np.testing.assert_array_equal(lu1.argmax(-1), [[1], [0]])
    lu4 = to_numpy(memory.least_used(asarray(w_u, xp), 4))
    np.testing.assert_array_equal(lu4.argmax(-1), [[1, 2, 4, 5], [0, 1, 2, 3]])
    assert np.all(lu4.sum(-1) == 1)


def test_usage(backend):
    xp = get_xp(backend)
    w_u, a, b = rand(B, N, seed=1), probs(B, 2, N, seed=2), probs(B, 2, N, seed=3)
    out = to_numpy(memory.usage_forward(asarray(w_u, xp), 0.95, asarray(a, xp), asarray(b, xp)))
    np.testing.assert_allclose(out, 0.95 * w_u + a.sum(1) + b.sum(1))


@pytest.mark.parametrize("model,R,add", [("flmn", 1, "separate"), ("mann", 1, "separate"),
                                          ("mann", 3, "separate"), ("mann", 2, "key")])
def test_memory_step(backend, model, R, add):
    """A whole memory step (heads, previous memory) -> (r, memory) against differences, with
    upstream gradients on r and on every differentiable field of the new memory."""
    xp = get_xp(backend)
    cfg = ModelConfig(model=model, reads=R, slots=N, width=W, mann_add=add)
    module = cfg.memory
    mem0 = module.initial_memory(cfg, B, np, np.float64)
    # a lived-in memory: random contents and weights, a least-used choice as one-hots
    diff_fields = [f for f in mem0._fields if f not in ("w_u", "w_lu", "w_w")]
    init = {f: (rand(*np.shape(getattr(mem0, f)), seed=i) if f.startswith("M") else probs(*np.shape(getattr(mem0, f)), seed=i))
            for i, f in enumerate(diff_fields)}
    w_u = np.random.default_rng(9).random((B, N))
    fixed = {"w_u": asarray(w_u, xp), "w_lu": asarray(np.asarray(memory.least_used(w_u, R)), xp)}
    if model == "mann":
        fixed["w_w"] = None   # not an input of the step
    heads = rand(B, module.head_size(cfg), seed=7)

    def forward(heads, *fields):
        mem = type(mem0)(**dict(zip(diff_fields, fields)), **fixed)
        r, new, cache = module.memory_step_forward(heads, mem, cfg)
        return (r, *[getattr(new, f) for f in diff_fields], cache)

    def backward(dr, *dfields_and_cache):
        *dfields, cache = dfields_and_cache
        dmem = type(mem0)(**dict(zip(diff_fields, dfields)), **{k: None for k in fixed})
        dheads, dprev = module.memory_step_backward(dr, dmem, cache)
        return (dheads, *[getattr(dprev, f) for f in diff_fields])

    inputs = [heads] + [init[f] for f in diff_fields]
    errs = check_op(forward, backward, inputs, xp)
    assert max(errs) < TOL, dict(zip(["heads"] + diff_fields, errs))


def test_cosine_backward_at_a_zero_key_or_slot(backend):
    """With the epsilon on the product a zero key (or slot) has a true gradient, dK M / eps (the
    |k| factor is second order there); the backward must give it, not 0/0."""
    xp = get_xp(backend)
    k = rand(B, 2, W, seed=7)
    k[:, 0] = 0.0
    M = rand(B, N, W, seed=8)
    M[:, 1] = 0.0
    K, cache = addressing.cosine_forward(asarray(k, xp), asarray(M, xp), "product")
    dK = rand(B, 2, N, seed=9)
    dk, dM = (to_numpy(g) for g in addressing.cosine_backward(asarray(dK, xp), cache))
    assert np.all(np.isfinite(dk)) and np.all(np.isfinite(dM))
    eps = addressing.COSINE_EPS
    np.testing.assert_allclose(dk[:, 0], np.einsum("bn,bnw->bw", dK[:, 0], M) / eps, rtol=1e-6)
    np.testing.assert_allclose(dM[:, 1], np.einsum("bj,bjw->bw", dK[:, :, 1], k) / eps, rtol=1e-6)
    # the directional derivative along a small step agrees (K is linear in k to first order at 0)
    u = rand(B, 1, W, seed=10)
    h = 1e-15
    k_step = k.copy()
    k_step[:, :1] += h * u
    K1 = to_numpy(addressing.cosine_forward(asarray(k_step, xp), asarray(M, xp), "product")[0])
    numeric = np.sum((K1 - to_numpy(K))[:, 0] * dK[:, 0]) / h
    assert numeric == pytest.approx(np.sum(dk[:, 0] * u[:, 0]), rel=1e-3)
