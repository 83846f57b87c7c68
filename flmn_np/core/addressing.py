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
    """K[b,r,i] = k[b,r] . M[b,i] / D[b,r,i]   [FLMN eq 1], with the epsilon placed by
    `eps_placement` (docs/derivations.md#cosine-similarity):

        'product':  D = |k| |M| + eps,  |x| = sqrt(x . x)         (the true cosine)
        'inside':   D = |k| |M|,        |x| = sqrt(x . x + eps)

    k (B, R, W), M (B, N, W)  ->  K (B, R, N), cache.  Either way an empty slot cannot divide by 0;
    'inside' shrinks the cosine of a slot whose norm is near sqrt(eps) (the 1e-6 fill).
    """
    xp = array_namespace(k, M)
    inside = {"product": 0.0, "inside": eps}[eps_placement]
    k_norm = xp.sqrt(xp.vecdot(k, k) + inside)                         # (B, R)
    M_norm = xp.sqrt(xp.vecdot(M, M) + inside)                         # (B, N)
    denom = k_norm[:, :, None] * M_norm[:, None, :]                    # (B, R, N)
    if eps_placement == "product":
        denom = denom + eps
    K = xp.matmul(k, M.mT) / denom
    return K, (k, M, K, k_norm, M_norm, denom)


def cosine_backward(dK, cache):
    """With K = k.M / D, D = |k| |M| (+ eps) and d|x|/dx = x / |x| (either placement):

        dk[r] = sum_i dK[r,i] M[i] / D[r,i] - (sum_i dK[r,i] K[r,i] |M[i]| / D[r,i]) k[r] / |k[r]|
        dM[i] = sum_r dK[r,i] k[r] / D[r,i] - (sum_r dK[r,i] K[r,i] |k[r]| / D[r,i]) M[i] / |M[i]|

    With 'inside', |k| |M| / D = 1 and the second terms reduce to (sum dK K) k / |k|^2.
    dK (B, R, N)  ->  dk (B, R, W), dM (B, N, W).
    """
    k, M, K, k_norm, M_norm, denom = cache
    xp = array_namespace(dK)
    dK_scaled = dK / denom                                             # (B, R, N)
    dKK = dK_scaled * K                                                # dK K / D
    dk = (xp.matmul(dK_scaled, M)
          - (xp.sum(dKK * M_norm[:, None, :], axis=-1) / k_norm)[:, :, None] * k)
    dM = (transpose_matmul(dK_scaled, k)
          - (xp.sum(dKK * k_norm[:, :, None], axis=1) / M_norm)[:, :, None] * M)
    return dk, dM


def address_forward(k, M, eps_placement="product"):
    """w[b,r,:] = softmax_i(K[b,r,i]) with K the cosine similarity   [FLMN eq 1-2]."""
    K, cos_cache = cosine_forward(k, M, eps_placement)
    w, sm_cache = softmax_forward(K)
    return w, (cos_cache, sm_cache)


def address_backward(dw, cache):
    """Softmax backward, then cosine backward  ->  dk (B, R, W), dM (B, N, W)."""
    cos_cache, sm_cache = cache
    return cosine_backward(softmax_backward(dw, sm_cache), cos_cache)


def read_forward(w, M):
    """r[b,r] = sum_i w[b,r,i] M[b,i]      [FLMN eq 3]     w (B, R, N), M (B, N, W) -> (B, R, W)."""
    xp = array_namespace(w, M)
    return xp.matmul(w, M), (w, M)


def read_backward(dr, cache):
    """dw = dr M^T  (B, R, N);   dM = w^T dr  (B, N, W)."""
    w, M = cache
    xp = array_namespace(dr)
    return xp.matmul(dr, M.mT), transpose_matmul(w, dr)
