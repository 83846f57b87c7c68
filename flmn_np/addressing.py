"""Content addressing and reading: cosine similarity, softmax read weights, weighted read.

Shapes carry a head axis R (MANN's read heads; R = 1 for FLMN's single label read head):
k (B, R, W) keys, M (B, N, W) memory, w (B, R, N) weights.
Derivations: docs/derivations.md#cosine-similarity and #read.
"""
from .backend import array_namespace
from .ops import softmax_forward, softmax_backward, transpose_matmul


def cosine_forward(k, M, eps=1e-8):
    """K[b,r,i] = k[b,r] . M[b,i] / (|k[b,r]| |M[b,i]|),  |x| = sqrt(x . x + eps)   [FLMN eq 1]

    k (B, R, W), M (B, N, W)  ->  K (B, R, N), cache.  The epsilon keeps empty slots safe.
    """
    xp = array_namespace(k, M)
    k_norm = xp.sqrt(xp.vecdot(k, k) + eps)                            # (B, R)
    M_norm = xp.sqrt(xp.vecdot(M, M) + eps)                            # (B, N)
    denom = k_norm[:, :, None] * M_norm[:, None, :]                    # (B, R, N)
    K = xp.matmul(k, M.mT) / denom
    return K, (k, M, K, k_norm, M_norm, denom)


def cosine_backward(dK, cache):
    """With K = k.M / (|k| |M|) and d|x|/dx = x / |x|:

        dk[r] = sum_i dK[r,i] M[i] / (|k[r]| |M[i]|) - (sum_i dK[r,i] K[r,i]) k[r] / |k[r]|^2
        dM[i] = sum_r dK[r,i] k[r] / (|k[r]| |M[i]|) - (sum_r dK[r,i] K[r,i]) M[i] / |M[i]|^2
    """
    k, M, K, k_norm, M_norm, denom = cache
    xp = array_namespace(dK)
    dK_scaled = dK / denom                                             # (B, R, N)
    dKK = dK * K
    dk = xp.matmul(dK_scaled, M) - (xp.sum(dKK, axis=-1) / (k_norm * k_norm))[:, :, None] * k
    dM = transpose_matmul(dK_scaled, k) - (xp.sum(dKK, axis=1) / (M_norm * M_norm))[:, :, None] * M
    return dk, dM


def address_forward(k, M):
    """w[b,r,:] = softmax_i(K[b,r,i]) with K the cosine similarity   [FLMN eq 1-2]."""
    K, cos_cache = cosine_forward(k, M)
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
