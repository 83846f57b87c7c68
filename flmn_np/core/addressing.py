"""Content addressing and reading: cosine similarity, softmax read weights, weighted read.

Shapes carry a head axis R (MANN's read heads; R = 1 for FLMN's single label read head):
k (B, R, W) keys, M (B, N, W) memory, w (B, R, N) weights.
Derivations: docs/derivations.md#cosine-similarity and #read.
"""
from .backend import array_namespace
from .ops import softmax_forward, softmax_backward, transpose_matmul


COSINE_EPS = 1e-8
COSINE_EPS_PLACEMENTS = ("product", "inside")


def cosine_forward(k, M, eps_placement="product", eps=COSINE_EPS):
    """K[b,j,i] = k[b,j] . M[b,i] / D[b,j,i]   [FLMN eq 1], with the epsilon placed by
    `eps_placement` (docs/derivations.md#cosine-similarity):

        'product':  D = |k| |M| + eps,  |x| = sqrt(x . x)         (the true cosine)
        'inside':   D = |k| |M|,        |x| = sqrt(x . x + eps)

    k (B, R, W), M (B, N, W)  ->  K (B, R, N), cache.  Either way an empty slot cannot divide by 0;
    'inside' shrinks the cosine of a slot whose norm is near sqrt(eps) (the 1e-6 fill).
    """
    xp = array_namespace(k, M)
    kk, MM = xp.vecdot(k, k), xp.vecdot(M, M)                          # (B, R), (B, N)
    if eps_placement == "inside":
        kk, MM = kk + eps, MM + eps
    k_norm, M_norm = xp.sqrt(kk), xp.sqrt(MM)
    denom = k_norm[:, :, None] * M_norm[:, None, :]                    # (B, R, N)
    if eps_placement == "product":
        denom = denom + eps
    K = xp.matmul(k, M.mT) / denom
    return K, (k, M, K, k_norm, M_norm, denom)


def cosine_backward(dK, cache):
    """With K = k.M / D, D = |k| |M| (+ eps) and d|x|/dx = x / |x| (either placement):

        dk[j] = sum_i dK[j,i] M[i] / D[j,i] - (sum_i dK[j,i] K[j,i] |M[i]| / D[j,i]) k[j] / |k[j]|
        dM[i] = sum_j dK[j,i] k[j] / D[j,i] - (sum_j dK[j,i] K[j,i] |k[j]| / D[j,i]) M[i] / |M[i]|

    With 'inside', |k| |M| / D = 1 and the second terms reduce to (sum dK K) k / |k|^2.

    Inputs:  dK (B, R, N), cache from cosine_forward (either placement)
    Returns: dk (B, R, W), dM (B, N, W)
    """
    k, M, K, k_norm, M_norm, denom = cache
    xp = array_namespace(dK)
    dK_scaled = dK / denom                                             # (B, R, N)
    dKK = dK_scaled * K                                                # dK K / D
    dk = (xp.matmul(dK_scaled, M)
          - (xp.sum(dKK * M_norm[:, None, :], axis=-1) / _nonzero(k_norm, xp))[:, :, None] * k)
    dM = (transpose_matmul(dK_scaled, k)
          - (xp.sum(dKK * k_norm[:, :, None], axis=1) / _nonzero(M_norm, xp))[:, :, None] * M)
    return dk, dM


def _nonzero(norm, xp):
    """|x|, with 1 where x = 0. Only 'product' has zero norms (a zero key: a blank first input
    through zero biases; an erased slot written with a zero add vector). There K = 0, so the
    second term's numerator is 0 and the term is 0, not 0/0: K = k.M / (|k||M| + eps) is
    differentiable at x = 0 with gradient sum dK M / eps, which the first term alone gives."""
    return norm + xp.astype(norm == 0, norm.dtype)


def address_forward(k, M, eps_placement="product"):
    """w[b,j,:] = softmax_i(K[b,j,i]) with K the cosine similarity   [FLMN eq 1-2]

    k (B, R, W), M (B, N, W)  ->  w (B, R, N), cache."""
    K, cos_cache = cosine_forward(k, M, eps_placement)
    w, sm_cache = softmax_forward(K)
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
