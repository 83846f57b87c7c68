"""Memory writes: LRUA write weights, erase-and-add writes, usage and the least-used slots.

Shapes carry a head axis R (MANN's write heads; R = 1 for FLMN):
M (B, N, W) memory, w (B, R, N) weights, a (B, R, W) add vectors, g_w (B, R) write gates.
Derivations: docs/derivations.md#write-weights, #erase-and-add, #label-write and
#usage-and-the-least-used-slot.
"""
from . import kernels, levels
from .backend import array_namespace
from .ops import transpose_matmul


def write_weights_forward(g_w, w_r_prev, w_lu_prev):
    """w_w[t] = g_w[t] w_r[t-1] + (1 - g_w[t]) w_lu[t-1]          [FLMN eq 6; MANN step 1]

    g_w (B, R), w_r_prev (B, R, N), w_lu_prev (B, R, N)  ->  w_w (B, R, N), cache.
    """
    diff = w_r_prev - w_lu_prev                                        # constant w_lu inside
    return w_lu_prev + g_w[:, :, None] * diff, (g_w, diff)


def write_weights_backward(dw_w, cache):
    """dg_w = sum_i dw_w[i] (w_r[t-1][i] - w_lu[t-1][i]);  dw_r_prev = g_w dw_w.
    w_lu[t-1] is a constant in backward (it comes from an argmin).

    Inputs:  dw_w (B, R, N), cache from write_weights_forward
    Returns: dg_w (B, R), dw_r_prev (B, R, N)
    """
    g_w, diff = cache
    xp = array_namespace(dw_w)
    return xp.sum(dw_w * diff, axis=-1), g_w[:, :, None] * dw_w


def write_forward(M_prev, w, a, erase=None):
    """M[t](i) = M[t-1](i) (1 - erase(i)) + sum_j w[j](i) a[j]      [FLMN eq 7-8, eq 10]

    M_prev (B, N, W), w (B, R, N), a (B, R, W), erase (B, N) or None (no erase: the label write)
    ->  M (B, N, W), cache.
    """
    keep = _keep(erase)                                                # (B, N, 1)
    added = transpose_matmul(w, a)                                     # (B, N, W)
    M = added + (M_prev if keep is None else M_prev * keep)
    return M, (w, a, keep)


def _keep(erase):
    """1 - erase as (B, N, 1), or None for no erase."""
    return None if erase is None else (1.0 - erase)[:, :, None]


def write_backward(dM, cache):
    """dM_prev = dM (1 - erase);  dw[j](i) = dM(i) . a[j];  da[j] = sum_i w[j](i) dM(i).
    erase is the least-used one-hot, a constant in backward.

    Inputs:  dM (B, N, W), cache from write_forward
    Returns: dM_prev (B, N, W), dw (B, R, N), da (B, R, W)
    """
    w, a, keep = cache
    xp = array_namespace(dM)
    dM_prev = dM if keep is None else dM * keep
    return dM_prev, xp.matmul(a, dM.mT), xp.matmul(w, dM)


def usage_forward(w_u_prev, gamma, w_a, w_b):
    """w_u[t] = gamma w_u[t-1] + w_a + w_b, the step's two weights summed over heads   [FLMN eq 4]

    w_u_prev (B, N); w_a, w_b (B, R, N) (read and write weights, in either order).  Not
    differentiated: w_u reaches the loss only through the argmin in least_used, so it carries
    no gradient.
    """
    w_a, w_b = _head_sums(w_a, w_b)
    return gamma * w_u_prev + w_a + w_b


def _head_sums(*weights):
    """Each (B, R, N) weight summed over its R heads  ->  (B, N) each."""
    xp = array_namespace(weights[0])
    return tuple(w[:, 0, :] if w.shape[1] == 1 else xp.sum(w, axis=1) for w in weights)


def least_used(w_u, n_heads):
    """One-hot of the n_heads least-used slots, ascending usage, ties to the lowest index
    [FLMN eq 5]:  w_u (B, N)  ->  w_lu (B, n_heads, N).   # constant in backward"""
    xp = array_namespace(w_u)
    if n_heads == 1:
        idx = xp.argmin(w_u, axis=-1, keepdims=True)                  # first minimum, (B, 1)
    else:
        idx = xp.argsort(w_u, axis=-1, stable=True)[:, :n_heads]      # (B, R)
    return xp.astype(idx[:, :, None] == xp.arange(w_u.shape[-1]), w_u.dtype)


# CuPy's elementwise level (levels.py): the write weights, a one-head write and the usage after
# its head sums each one kernel (kernels.WRITE_WEIGHTS, WRITE or WRITE_ADD, USAGE).
def _write_forward_kernel(M_prev, w, a, erase=None):
    """write_forward for one head in one kernel      [FLMN eq 7-8, eq 10]: the same (M, cache)."""
    keep = _keep(erase)
    return kernels.write_forward(M_prev, w, a, keep), (w, a, keep)


write_weights_forward = levels.elementwise_form(write_weights_forward,
                                                kernels.write_weights_forward)
write_forward = levels.elementwise_form(write_forward, _write_forward_kernel,
                                        when=lambda M_prev, w, *args, **kwargs: w.shape[1] == 1)
usage_forward = levels.elementwise_form(
    usage_forward, lambda w_u_prev, gamma, w_a, w_b: kernels.usage_forward(
        w_u_prev, gamma, *_head_sums(w_a, w_b)))
