"""Small ops shared by both models: activations, one-hot labels, softmax, cross-entropy.

Every op is a pure pair `name_forward(...) -> out, cache` / `name_backward(dout, cache) -> d_in`.
Derivations: docs/derivations.md#softmax and #cross-entropy.
"""
import math

from . import kernels, levels
from .backend import array_namespace


def sigmoid(z):
    """sigma(z) = 1 / (1 + exp(-z)), written as 0.5 tanh(z/2) + 0.5 so it never overflows."""
    xp = array_namespace(z)
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def interface_forward(heads, n_tanh):
    """The controller's interface activations: tanh on the first n_tanh columns (keys and add
    vectors), the sigmoid on the rest (write gates).

    heads (B, n)  ->  tanh part (B, n_tanh), gates (B, n - n_tanh), cache."""
    xp = array_namespace(heads)
    tanh_part, gates = xp.tanh(heads[:, :n_tanh]), sigmoid(heads[:, n_tanh:])
    return tanh_part, gates, (tanh_part, gates)


def interface_backward(d_tanh, d_gates, cache):
    """dheads = [d_tanh (1 - tanh^2) | d_gates g (1 - g)]  (B, n).

    Inputs:  d_tanh (B, n_tanh), d_gates (B, n - n_tanh), cache from interface_forward
    Returns: dheads (B, n)"""
    tanh_part, gates = cache
    xp = array_namespace(d_tanh)
    return xp.concat([d_tanh * (1.0 - tanh_part * tanh_part), d_gates * gates * (1.0 - gates)],
                     axis=-1)


def transpose_matmul(w, v):
    """w^T v over the head axis: sum_r w[:, r, :, None] * v[:, r, None, :]
    w (B, R, N), v (B, R, W)  ->  (B, N, W).  For R = 1 this is an outer product, done by
    broadcasting: a matmul with an inner size of 1 is about 3x slower on NumPy."""
    xp = array_namespace(w, v)
    if w.shape[1] == 1:
        return w.mT * v
    return xp.matmul(w.mT, v)


def transposed(W):
    """W^T (..., m, n) of a weight W (..., n, m), as an array of its own laid out row by row
    (reshaping the transposed view to 1-D copies it in that order). Made once per episode for
    the backward loop: a thin a (B, m) times it is one plain GEMM, about 2x faster on NumPy
    than a @ W.mT or (W a^T)^T (measured in docs/performance.md)."""
    xp = array_namespace(W)
    *lead, n, m = W.shape
    return xp.reshape(xp.reshape(W.mT, (-1,)), (*lead, m, n))


def per_model_matmul(a, W, b=None):
    """a (E, n) @ W (*lead, n, m) [+ b (*lead, m)]  ->  (E, m): the E = prod(lead) B episodes,
    model-major, each times its own model's weight (and plus its bias), as one batched product
    (*lead, B, n) @ (*lead, n, m). For one model (lead = ()) this is the plain a @ W [+ b]."""
    xp = array_namespace(a, W)
    *lead, n, m = W.shape
    out = xp.matmul(xp.reshape(a, (*lead, -1, n)), W)
    if b is not None:
        out = out + b[..., None, :]
    return xp.reshape(out, (-1, m))


def model_major(a, lead):
    """(T, E, n), time-major with E = prod(lead) B episodes  ->  (*lead, T B, n): each model's
    T B rows together, for one 2-D product per model with its weights ((T, B, n) @ (n, m) would
    be T separate small products on NumPy, about 3x slower). A copy unless lead = ()."""
    xp = array_namespace(a)
    T, E, n = a.shape
    L = len(lead)
    a = xp.reshape(a, (T, *lead, E // math.prod(lead), n))
    a = xp.permute_dims(a, (*range(1, L + 1), 0, L + 1, L + 2))       # (*lead, T, B, n)
    return xp.reshape(a, (*lead, -1, n))


def rows_of_episodes(a, lead):
    """(*lead, B, T, n) episodes  ->  (*lead, T B, n): each model's rows time-major (row t B + b
    is episode b at step t), for one product per model over all T steps. A copy."""
    xp = array_namespace(a)
    L = len(lead)
    a = xp.permute_dims(a, (*range(L), L + 1, L, L + 2))               # (*lead, T, B, n)
    return xp.reshape(a, (*lead, -1, a.shape[-1]))


def episodes_of_rows(a, lead, B):
    """(*lead, T B, n)  ->  (*lead, B, T, n): the inverse of rows_of_episodes."""
    xp = array_namespace(a)
    L = len(lead)
    a = xp.reshape(a, (*lead, -1, B, a.shape[-1]))                     # (*lead, T, B, n)
    return xp.permute_dims(a, (*range(L), L + 1, L, L + 2))


def time_major(a, T):
    """(*lead, T B, n)  ->  (T, E, n) with E = prod(lead) B: the inverse of model_major."""
    xp = array_namespace(a)
    *lead, TB, n = a.shape
    L = len(lead)
    a = xp.reshape(a, (*lead, T, TB // T, n))
    a = xp.permute_dims(a, (L, *range(L), L + 1, L + 2))               # (T, *lead, B, n)
    return xp.reshape(a, (T, -1, n))


def one_hot(y, n_classes, dtype):
    """y (...,) integer labels -> (..., n_classes) one-hot of `dtype`."""
    xp = array_namespace(y)
    return xp.astype(y[..., None] == xp.arange(n_classes), dtype)


def previous_label_onehot(y, n_classes, dtype):
    """y (..., B, T) -> (..., B, T, C): step t sees onehot(y[t-1]), zeros at the first step
    [FLMN §3]."""
    xp = array_namespace(y)
    y_onehot = one_hot(y, n_classes, dtype)                              # (..., B, T, C)
    zeros = xp.zeros_like(y_onehot[..., :1, :])
    return xp.concat([zeros, y_onehot[..., :-1, :]], axis=-2)


def softmax_forward(z):
    """p[i] = exp(z[i]) / sum_j exp(z[j]) over the last axis  ->  p, cache = p."""
    xp = array_namespace(z)
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return p, p


def softmax_bounded_forward(z):
    """softmax_forward for |z| <= 1 (cosine similarities): exp cannot overflow, so the max is
    not subtracted (softmax is unchanged by the shift; exp(z) lies in [1/e, e]).  ->  p, cache = p."""
    xp = array_namespace(z)
    e = xp.exp(z)
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return p, p


def softmax_backward(dp, cache):
    """dz = p * (dp - sum_v dp[v] p[v])   (Jacobian diag(p) - p p^T applied to dp).

    Inputs:  dp (..., n), cache = p from softmax_forward
    Returns: dz (..., n)
    """
    p = cache
    xp = array_namespace(dp)
    return p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))


def cross_entropy_forward(logits, y):
    """L = -mean_{b,t} log softmax(logits[b,t])[y[b,t]]   logits (..., B, T, C), y (..., B, T) int.

    Returns the loss, one per model (0-d for one model, (G,) for a stack), and cache
    (p, y_onehot)."""
    xp = array_namespace(logits)
    z = logits - xp.max(logits, axis=-1, keepdims=True)
    log_p = z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))
    y_onehot = one_hot(y, logits.shape[-1], logits.dtype)
    n = logits.shape[-3] * logits.shape[-2]
    loss = -xp.sum(y_onehot * log_p, axis=(-3, -2, -1)) / n
    return loss, (xp.exp(log_p), y_onehot)


def cross_entropy_backward(dloss, cache):
    """dlogits = dloss * (p - onehot(y)) / (B T), per model.

    Inputs:  dloss, a number (1 for the loss itself); cache (p, onehot(y)) from cross_entropy_forward
    Returns: dlogits (..., B, T, C)
    """
    p, y_onehot = cache
    n = p.shape[-3] * p.shape[-2]
    return (p - y_onehot) * (dloss / n)


# CuPy's elementwise level (levels.py): the interface activations one kernel, their derivative
# two (kernels.INTERFACE_FORWARD, TANH_BACKWARD, SIGMOID_BACKWARD).
interface_forward = levels.elementwise_form(interface_forward, kernels.interface_forward)
interface_backward = levels.elementwise_form(interface_backward, kernels.interface_backward)
