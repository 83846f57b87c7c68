"""One FLMN step, forward and backward, in plain NumPy, checked by finite differences.

    python docs/one_step.py

One episode (no batch axis), float64, tiny sizes. The step is the whole of docs/model.md's
"Controller and output layer" and "FLMN step": LSTM, interface heads, feature and label writes,
addressing, read, usage, least used, output layer, cross-entropy. The backward takes the
gradient that step t+1 sends back to the state after step t (dstate) and returns the gradient
for the state after step t-1: the seven quantities that carry a gradient across time
(h, c, r, M_f, M_l, w_r, w_wf). w_u and w_lu are constants of the backward.
flmn_np/core does the same with a batch axis, a head axis and every product hoisted out of the
time loop where it can be (tests/test_docs.py checks that the two agree).
"""
import numpy as np

D, C, H, N, W = 4, 3, 5, 6, 3      # input, classes, LSTM units, slots, slot width
GAMMA, EPS = 0.95, 1e-8
CARRIED = ("h", "c", "r", "M_f", "M_l", "w_r", "w_wf")   # fields with a gradient across t


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def step_forward(p, x, y_prev, s, eps_inside=False):
    """p params; x (D,); y_prev (C,) one-hot of y[t-1]; s the state after step t-1 (dict).
    ->  logits (C,), the state after step t, cache."""
    # controller: z = [x; y_prev; r; h] W_lstm + b_lstm, gates [i | f | o | g]
    v = np.concatenate([x, y_prev, s["r"], s["h"]])
    z = v @ p["W_lstm"] + p["b_lstm"]                              # (4H,)
    i, f, o = sigmoid(z[:H]), sigmoid(z[H:2 * H]), sigmoid(z[2 * H:3 * H])
    g = np.tanh(z[3 * H:])                                         # LSTM candidate
    c = f * s["c"] + i * g
    h = o * np.tanh(c)
    # interface: [k | a_f | a_l | alpha]
    heads = h @ p["W_head"] + p["b_head"]                          # (3W + 1,)
    tanh_heads = np.tanh(heads[:3 * W])
    k, a_f, a_l = tanh_heads[:W], tanh_heads[W:2 * W], tanh_heads[2 * W:]
    g_w = sigmoid(heads[3 * W])                                    # write gate
    # writes                                                       [FLMN eq 6-10]
    w_wf = g_w * s["w_r"] + (1 - g_w) * s["w_lu"]                  # (N,)
    keep = 1 - s["w_lu"]                                           # erase the least-used slot
    M_f = s["M_f"] * keep[:, None] + np.outer(w_wf, a_f)           # (N, W)
    M_l = s["M_l"] + np.outer(s["w_wf"], a_l)                      # w_wl[t] = w_wf[t-1]
    # content addressing in M_f, read from M_l                     [FLMN eq 1-3]
    k_norm = np.sqrt(k @ k + (EPS if eps_inside else 0.0))
    M_norm = np.sqrt(np.sum(M_f * M_f, axis=1) + (EPS if eps_inside else 0.0))   # (N,)
    denom = k_norm * M_norm + (0.0 if eps_inside else EPS)
    K = (M_f @ k) / denom                                          # (N,) cosines
    e = np.exp(K - K.max())
    w_r = e / e.sum()
    r = w_r @ M_l                                                  # (W,)
    # usage and least used                                         [FLMN eq 4-5]
    w_u = GAMMA * s["w_u"] + w_wf + w_r
    w_lu = np.eye(N)[np.argmin(w_u)]                               # constant in backward
    logits = np.concatenate([h, r]) @ p["W_out"] + p["b_out"]
    state = dict(h=h, c=c, r=r, M_f=M_f, M_l=M_l, w_r=w_r, w_wf=w_wf, w_u=w_u, w_lu=w_lu)
    cache = (v, i, f, o, g, c, h, tanh_heads, g_w, keep, k, a_f, a_l, w_wf, M_f, M_l,
             k_norm, M_norm, denom, K, w_r, r, s)
    return logits, state, cache


def step_backward(dlogits, dstate, p, cache):
    """dlogits (C,); dstate: gradients reaching the state after step t from step t+1
    (dict over CARRIED).  ->  grads (dict like p), dstate_prev (dict over CARRIED)."""
    (v, i, f, o, g, c, h, tanh_heads, g_w, keep, k, a_f, a_l, w_wf, M_f, M_l,
     k_norm, M_norm, denom, K, w_r, r, s) = cache
    grads = {}
    # output layer: logits = [h; r] W_out + b_out
    grads["W_out"] = np.outer(np.concatenate([h, r]), dlogits)
    grads["b_out"] = dlogits
    dhr = p["W_out"] @ dlogits
    dh = dstate["h"] + dhr[:H]
    dr = dstate["r"] + dhr[H:]
    # read: r = w_r M_l
    dw_r = M_l @ dr + dstate["w_r"]                                # + the gate at t+1
    dM_l = np.outer(w_r, dr) + dstate["M_l"]                       # + the label write at t+1
    # softmax, then cosine (one formula for both epsilon placements)
    dK = w_r * (dw_r - dw_r @ w_r)
    dK_scaled = dK / denom
    dKK = dK_scaled * K
    dk = dK_scaled @ M_f - (dKK @ M_norm) / k_norm * k
    dM_f = np.outer(dK_scaled, k) - (dKK * k_norm / M_norm)[:, None] * M_f
    dM_f += dstate["M_f"]                                          # + the feature write at t+1
    # label write: M_l = M_l_prev + outer(w_wf_prev, a_l)
    dM_l_prev = dM_l
    dw_wf_prev = dM_l @ a_l
    da_l = s["w_wf"] @ dM_l
    # feature write: M_f = M_f_prev * keep + outer(w_wf, a_f)
    dM_f_prev = dM_f * keep[:, None]
    dw_wf = dM_f @ a_f + dstate["w_wf"]                            # + the label write at t+1
    da_f = w_wf @ dM_f
    # write weights: w_wf = w_lu_prev + g_w (w_r_prev - w_lu_prev)
    dg_w = dw_wf @ (s["w_r"] - s["w_lu"])
    dw_r_prev = g_w * dw_wf
    # heads: tanh on [k | a_f | a_l], sigmoid on alpha
    dheads = np.concatenate([np.concatenate([dk, da_f, da_l]) * (1 - tanh_heads ** 2),
                             [dg_w * g_w * (1 - g_w)]])
    grads["W_head"] = np.outer(h, dheads)
    grads["b_head"] = dheads
    dh = dh + p["W_head"] @ dheads
    # LSTM cell
    tanh_c = np.tanh(c)
    dc_total = dstate["c"] + dh * o * (1 - tanh_c ** 2)
    di, df, do, dg = dc_total * g, dc_total * s["c"], dh * tanh_c, dc_total * i
    dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g ** 2)])
    grads["W_lstm"] = np.outer(v, dz)
    grads["b_lstm"] = dz
    dv = p["W_lstm"] @ dz                                          # rows: x, y_prev, r, h
    dstate_prev = dict(h=dv[D + C + W:], c=dc_total * f, r=dv[D + C:D + C + W],
                       M_f=dM_f_prev, M_l=dM_l_prev, w_r=dw_r_prev, w_wf=dw_wf_prev)
    return grads, dstate_prev


def cross_entropy(logits, y):
    """-log softmax(logits)[y]  ->  loss, dlogits."""
    e = np.exp(logits - logits.max())
    prob = e / e.sum()
    return -np.log(prob[y]), prob - np.eye(C)[y]


def example(seed=0):
    """Random params, inputs, a state after step t-1 and the gradient step t+1 sends back."""
    rng = np.random.default_rng(seed)
    shapes = {"W_lstm": (D + C + W + H, 4 * H), "b_lstm": (4 * H,), "W_head": (H, 3 * W + 1),
              "b_head": (3 * W + 1,), "W_out": (H + W, C), "b_out": (C,)}
    p = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    s = {name: rng.standard_normal(shape) for name, shape in
         dict(h=(H,), c=(H,), r=(W,), M_f=(N, W), M_l=(N, W)).items()}
    s["w_r"] = rng.dirichlet(np.ones(N))
    s["w_wf"] = rng.dirichlet(np.ones(N))
    s["w_u"] = rng.random(N)
    s["w_lu"] = np.eye(N)[np.argmin(s["w_u"])]
    x, y_prev, y = rng.random(D), np.eye(C)[1], 2
    dstate = {name: rng.standard_normal(np.shape(s[name])) for name in CARRIED}
    return p, x, y_prev, y, s, dstate


def check(seed=0, eps_inside=False, h=1e-6):
    """Largest norm ratio |a - n| / (|a| + |n|) over every parameter and every carried field
    of the previous state, for L = cross-entropy[t] + sum over CARRIED of sum(state * dstate)."""
    p, x, y_prev, y, s, dstate = example(seed)

    def loss():
        logits, state, _ = step_forward(p, x, y_prev, s, eps_inside)
        return cross_entropy(logits, y)[0] + sum(np.sum(state[n] * dstate[n]) for n in CARRIED)

    logits, _, cache = step_forward(p, x, y_prev, s, eps_inside)
    grads, dstate_prev = step_backward(cross_entropy(logits, y)[1], dstate, p, cache)
    errors = {}
    for name, value, analytic in ([(n, p[n], grads[n]) for n in p]
                                  + [(n + "_prev", s[n], dstate_prev[n]) for n in CARRIED]):
        numeric = np.zeros_like(value)
        flat = value.reshape(-1)                                   # a view: perturb in place
        for idx in range(flat.size):
            old = flat[idx]
            flat[idx] = old + h
            plus = loss()
            flat[idx] = old - h
            minus = loss()
            flat[idx] = old
            numeric.reshape(-1)[idx] = (plus - minus) / (2 * h)
        errors[name] = (np.linalg.norm(analytic - numeric)
                        / max(1e-30, np.linalg.norm(analytic) + np.linalg.norm(numeric)))
    return errors


if __name__ == "__main__":
    for eps_inside in (False, True):
        errors = check(eps_inside=eps_inside)
        print(f"cosine epsilon {'inside' if eps_inside else 'product'}:  "
              + "  ".join(f"{n} {e:.1e}" for n, e in errors.items()))
        print(f"  worst {max(errors.values()):.1e}")
