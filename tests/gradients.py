"""Centred finite differences for the op tests (float64, h = 1e-6, L = sum(out * dout))."""
import numpy as np

from flmn_np.core.backend import asarray, to_numpy
from flmn_np.gradcheck import rel_error


def numeric_grad(loss, x, h=1e-6):
    """dL/dx element by element for a host float64 array x (perturbed in place, restored)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = loss()
        flat[i] = old - h
        minus = loss()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def check_op(forward, backward, inputs, xp, wrt=None, seed=0):
    """Compare an op's backward with centred differences of L = sum_k sum(out_k * dout_k).

    forward and backward are the op's own pair, called as the engine calls them:
    forward(*inputs) -> (out_1, ..., out_m, cache); backward(dout_1, ..., dout_m, cache) -> the
    gradient of each input listed in `wrt` (default: all), in that order (one array or a tuple).
    Fixed arguments go in with functools.partial. Returns the norm-ratio error per input in `wrt`.
    """
    wrt = list(range(len(inputs))) if wrt is None else wrt
    rng = np.random.default_rng(seed)
    *outs, cache = forward(*[asarray(a, xp) for a in inputs])
    douts = [rng.standard_normal(np.shape(to_numpy(o))) for o in outs]
    analytic = backward(*[asarray(d, xp) for d in douts], cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)

    def loss():
        *o, _ = forward(*[asarray(a, xp) for a in inputs])
        return float(sum(np.sum(to_numpy(ok) * dk) for ok, dk in zip(o, douts)))

    return [rel_error(to_numpy(a), numeric_grad(loss, inputs[i])) for i, a in zip(wrt, analytic)]
