"""Content addressing and reading: cosine similarity, softmax read weights, weighted read.

Shapes carry a head axis R (MANN's read heads; R = 1 for FLMN's single label read head):
k (B, R, W) keys, M (B, N, W) memory, w (B, R, N) weights.
Derivations: docs/derivations.md#cosine-similarity and #read.
"""
from . import kernels, levels
from .backend import array_namespace
from .ops import softmax_backward, softmax_bounded_forward, transpose_matmul


COSINE_EPS = 1e-8
COSINE_EPS_PLACEMENTS = ("product", "inside")


def cosine_forward(k, M, eps_placement="product", eps=COSINE_EPS):
    """K[b,j,i] = k[b,j] . M[b,i] / D[b,j,i]   [FLMN eq 1], with the epsilon placed by
    `eps_placement` (docs/derivations.md#cosine-similarity):

        'product':  D = |k| |M| + eps,  |x| = sqrt(x . x)         (the true cosine)
        'inside':   D = |k| |M|,        |x| = sqrt(x . x + eps)

    k (B, R, W), M (B, N, W)  ->  K (B, R, N), cache.  Either way an empty slot cannot divide by 0;
    'inside' shrinks the cosine of a slot whose norm is near sqrt(eps) (the 1e-6 fill).
    The norms are kept squared, kk = |k|^2 (B, R, 1) and MM = |M|^2 (B, 1, N), and
    P = |k| |M| = sqrt(kk MM) is one root over (B, R, N).
    """
    xp = array_namespace(k, M)
    kk, MM = xp.vecdot(k, k)[:, :, None], xp.vecdot(M, M)[:, None, :]
    if eps_placement == "inside":
        kk, MM = kk + eps, MM + eps
    P = xp.sqrt(kk * MM)                                               # |k| |M|  (B, R, N)
    denom = P + eps if eps_placement == "product" else P
    K = xp.matmul(k, M.mT) / denom
    return K, (k, M, K, kk, MM, P, denom)


def cosine_backward(dK, cache):
    """With K = k.M / D, D = |k| |M| (+ eps) and d|x|/dx = x / |x| (either placement):

        dk[j] = sum_i dK[j,i] M[i] / D[j,i] - (sum_i dK[j,i] K[j,i] |M[i]| / D[j,i]) k[j] / |k[j]|
        dM[i] = sum_j dK[j,i] k[j] / D[j,i] - (sum_j dK[j,i] K[j,i] |k[j]| / D[j,i]) M[i] / |M[i]|

    In the code the second terms share E = dK K |k| |M| / D:  (sum_i E[j,i]) k[j] / |k[j]|^2 and
    (sum_j E[j,i]) M[i] / |M[i]|^2. With 'inside', |k| |M| / D = 1.

    Inputs:  dK (B, R, N), cache from cosine_forward (either placement)
    Returns: dk (B, R, W), dM (B, N, W)
    """
    k, M, K, kk, MM, P, denom = cache
    xp = array_namespace(dK)
    dK_scaled = dK / denom                                             # (B, R, N)
    E = dK_scaled * K * P                                              # dK K |k||M| / D
    dk = xp.matmul(dK_scaled, M) - xp.sum(E, axis=-1, keepdims=True) / _nonzero(kk, xp) * k
    dM = (transpose_matmul(dK_scaled, k)
          - (xp.sum(E, axis=1, keepdims=True) / _nonzero(MM, xp)).mT * M)
    return dk, dM


def _nonzero(sq_norm, xp):
    """|x|^2 + tiny, tiny the dtype's smallest normal number: 0 becomes tiny, and every |x|^2 above
    ~2^-p tiny (p the mantissa bits: 2e-31 in float32, 1e-292 in float64) is returned unchanged,
    since adding tiny rounds back to it. Only 'product' has zero norms (a zero key: a blank first
    input through zero biases; an erased slot written with a zero add vector). There K = 0, so
    the second term's numerator is exactly 0 and the term 0 / tiny = 0, not 0/0: K = k.M /
    (|k||M| + eps) is differentiable at x = 0 with gradient sum dK M / eps, which the first term
    alone gives."""
    return sq_norm + xp.finfo(sq_norm.dtype).smallest_normal


def address_forward(k, M, eps_placement="product"):
    """w[b,j,:] = softmax_i(K[b,j,i]) with K the cosine similarity   [FLMN eq 1-2]

    k (B, R, W), M (B, N, W)  ->  w (B, R, N), cache."""
    K, cos_cache = cosine_forward(k, M, eps_placement)
    w, sm_cache = softmax_bounded_forward(K)
    return w, (cos_cache, sm_cache)


def address_backward(dw, cache):
    """Softmax backward, then cosine backward.

    Inputs:  dw (B, R, N), cache from address_forward
    Returns: dk (B, R, W), dM (B, N, W)
    """
    cos_cache, sm_cache = cache
    return cosine_backward(softmax_backward(dw, sm_cache), cos_cache)


def read_forward(w, M):
    """r[b,j] = sum_i w[b,j,i] M[b,i]      [FLMN eq 3]     w (B, R, N), M (B, N, W) -> (B, R, W)."""
    xp = array_namespace(w, M)
    return xp.matmul(w, M), (w, M)


def read_backward(dr, cache):
    """dw = dr M^T;   dM = w^T dr (summed over heads).

    Inputs:  dr (B, R, W), cache from read_forward
    Returns: dw (B, R, N), dM (B, N, W)
    """
    w, M = cache
    xp = array_namespace(dr)
    return xp.matmul(dr, M.mT), transpose_matmul(w, dr)


# CuPy's elementwise level (levels.py): the cosine's elementwise work and the softmax's exp one
# kernel between the products (kernels.ADDRESS_FORWARD); backward three kernels around its
# products and sums (kernels.address_backward).
address_forward = levels.elementwise_form(
    address_forward, lambda k, M, eps_placement="product": kernels.address_forward(
        k, M, eps_placement, COSINE_EPS))
address_backward = levels.elementwise_form(address_backward, kernels.address_backward)
