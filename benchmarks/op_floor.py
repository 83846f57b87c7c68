"""How few array operations an FLMN time step's forward can take in array-API code, measured.

    python benchmarks/op_floor.py

The FLMN forward of docs/model.md written for the fewest calls into the array namespace, not
for reading: the sigmoid's 1/2 scales folded into the weights once per episode, so that one
tanh, one multiply and one add activate all four LSTM gates (and the interface heads); every
recurrent array kept as (B, 1, n), so no reshape is needed between the controller and the
memory. It is checked against flmn_np's forward (same logits in float64) and counted with the
counter of `python -m flmn_np.bench` (flmn_np/bench.py: every top-level call into the
namespace, operator, slice and transpose). It prints, per time step: this forward, flmn_np's
forward, flmn_np's whole training step (forward, backward and Adam), the quantity whose budget
the NumPy path is held to, and the matrix products of flmn_np's backward (the gradients of h,
the interface heads, the memories and the weights each need a product of their own).
docs/performance.md reads the numbers.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flmn_np.bench import by_kind, count_ops, counting_ops, random_batch   # noqa: E402
from flmn_np.core.addressing import COSINE_EPS                             # noqa: E402
from flmn_np.core.models import ModelConfig, forward, init_params         # noqa: E402
from flmn_np.core.ops import previous_label_onehot                         # noqa: E402


def minimal_forward(xp, params, x, y, cfg):
    """FLMN logits (B, T, C) with the fewest array operations per time step (model.md's FLMN
    step and controller, 'product' epsilon; the per-step count of each line is in its comment)."""
    B, T, D = x.shape
    H, N, W, C = cfg.hidden, cfg.n_slots, cfg.width, cfg.n_classes
    dtype = x.dtype
    half = xp.full((3 * H,), 0.5, dtype=dtype)
    # sigma(z) = 0.5 tanh(0.5 z) + 0.5 and g = tanh(z): act = tanh(s z) s + b on all gates, with
    # s z made by the weights times s (exact: s is a power of 2).
    s = xp.concat([half, xp.ones((H,), dtype=dtype)])
    b = xp.concat([half, xp.zeros((H,), dtype=dtype)])
    n_in = D + C
    W_rec = params["W_lstm"][n_in:, :] * s
    u = xp.concat([x, previous_label_onehot(y, C, dtype)], axis=-1)
    z_in = xp.reshape(xp.reshape(u, (B * T, n_in)) @ (params["W_lstm"][:n_in, :] * s)
                      + params["b_lstm"] * s, (B, T, 1, 4 * H))
    z_in = xp.unstack(xp.permute_dims(z_in, (1, 0, 2, 3)))              # T x (B, 1, 4H)
    s_head = xp.concat([xp.ones((3 * W,), dtype=dtype), xp.full((1,), 0.5, dtype=dtype)])
    b_head = xp.concat([xp.zeros((3 * W,), dtype=dtype), xp.full((1,), 0.5, dtype=dtype)])
    W_head, bias_head = params["W_head"] * s_head, params["b_head"] * s_head
    slots = xp.arange(N)

    h = c = xp.zeros((B, 1, H), dtype=dtype)
    r = xp.zeros((B, 1, W), dtype=dtype)
    M_f = M_l = xp.full((B, N, W), 1e-6, dtype=dtype)
    w_r = w_wf = w_u = xp.zeros((B, 1, N), dtype=dtype)
    w_lu = xp.astype(slots == 0, dtype) + w_r
    hs, rs = [], []
    for z_in_t in z_in:
        act = xp.tanh(z_in_t + xp.concat([r, h], axis=-1) @ W_rec) * s + b      # 6
        i, f, o, g = (act[..., j * H:(j + 1) * H] for j in range(4))            # 4
        c = f * c + i * g                                                      # 3
        h = o * xp.tanh(c)                                                     # 2
        heads = xp.tanh(h @ W_head + bias_head) * s_head + b_head              # 5
        k, a_f, a_l, g_w = (heads[..., j * W:min((j + 1) * W, 3 * W + 1)] for j in range(4))  # 4
        w_wf_prev, w_wf = w_wf, w_lu + g_w * (w_r - w_lu)                      # 3   [eq 6]
        M_f = M_f * (1.0 - w_lu.mT) + w_wf.mT * a_f                            # 6   [eq 7-8]
        M_l = M_l + w_wf_prev.mT * a_l                                         # 3   [eq 9-10]
        kk = xp.vecdot(k, k)[..., None]                                        # 2   (B, 1, 1)
        MM = xp.vecdot(M_f, M_f)[:, None, :]                                   # 2   (B, 1, N)
        e = xp.exp(k @ M_f.mT / (xp.sqrt(kk * MM) + COSINE_EPS))               # 6   [eq 1]
        w_r = e / xp.sum(e, axis=-1, keepdims=True)                            # 2   [eq 2]
        r = w_r @ M_l                                                          # 1   [eq 3]
        w_u = cfg.gamma * w_u + w_wf + w_r                                     # 3   [eq 4]
        w_lu = xp.astype(xp.argmin(w_u, axis=-1, keepdims=True) == slots, dtype)  # 3 [eq 5]
        hs.append(h)
        rs.append(r)
    hr = xp.concat([xp.stack(hs, axis=1), xp.stack(rs, axis=1)], axis=-1)      # (B, T, 1, H + W)
    return xp.reshape(hr @ params["W_out"] + params["b_out"], (B, T, C))


def measure(batch_size=16, samples_per_class=10):
    """-> dict of array operations per time step, after checking minimal_forward's logits."""
    import array_api_strict as xp
    cfg = ModelConfig(model="flmn")
    T = cfg.n_classes * samples_per_class
    params = init_params(cfg, 0, xp, dtype="float64")
    x, y = random_batch(cfg, batch_size, samples_per_class, xp)
    x = xp.astype(x, xp.float64)
    with counting_ops() as counter:
        logits = minimal_forward(counter.namespace, params, x, y, cfg)
    minimal = sum(counter.counts.values())
    with counting_ops() as counter:
        _, expected = forward(params, x, y, cfg)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-12, atol=1e-12)
    step = count_ops(cfg, batch_size, samples_per_class)
    backward_products = by_kind(step)["product"] - by_kind(counter.counts)["product"]
    return {"minimal_forward": round(minimal / T, 1),
            "flmn_np_forward": round(sum(counter.counts.values()) / T, 1),
            "flmn_np_step": round(sum(step.values()) / T, 1),
            "backward_products": round(backward_products / T, 1)}


if __name__ == "__main__":
    m = measure()
    print("FLMN array operations per time step (B = 16, T = 50, counted as `python -m flmn_np.bench` counts):")
    print(f"  forward written for the fewest operations (same logits): {m['minimal_forward']}")
    print(f"  flmn_np forward:                                         {m['flmn_np_forward']}")
    print(f"  flmn_np training step (forward, backward, Adam):         {m['flmn_np_step']}")
    print(f"  matrix products in flmn_np's backward:                   {m['backward_products']}")
