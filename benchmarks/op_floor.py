"""How few array operations a training step of FLMN and MANN can take in array-API code, measured.

    python benchmarks/op_floor.py

Both models' episode (docs/model.md), forward and backward, written for the fewest calls into
the array namespace, not for reading:
- the sigmoid's 1/2 folded into the weights once per episode, so that one tanh, one multiply
  and one add activate all four LSTM gates (act = tanh(s z) s + b; s, b per column), and the
  same for the interface heads; the backward of both is one expression, d act s^2 (1 - t^2);
- every recurrent array kept as (B, 1, n) or (B, R, n), so nothing is reshaped between the
  controller and the memory (only MANN with R > 1 reshapes its heads);
- every product that does not depend on the recurrence (inputs, output layer, loss, weight
  gradients) done once per episode, as flmn_np does.
The loss and every parameter gradient are checked against flmn_np's (float64, measure()), and
the operations are counted with the counter of `python -m flmn_np.bench` (flmn_np/bench.py: every
top-level call into the namespace, operator, slice and transpose), the forward and the whole
step apart. The optimizer is left out (flmn_np's Adam adds 0.7 per time step).
docs/performance.md reads the numbers against flmn_np's own count.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flmn_np.bench import count_ops, counting_ops, random_batch            # noqa: E402
from flmn_np.core.addressing import COSINE_EPS                             # noqa: E402
from flmn_np.core.models import ModelConfig, init_params, loss_and_grads  # noqa: E402
from flmn_np.core.ops import (cross_entropy_backward, cross_entropy_forward,  # noqa: E402
                              previous_label_onehot)

MODELS = {"FLMN": dict(model="flmn"), "MANN R = 1": dict(model="mann", reads=1),
          "MANN R = 4": dict(model="mann", reads=4)}


def act_scales(xp, n_tanh_first, n_sigmoid, n_tanh_last, dtype):
    """Per-column s and b for act = tanh(s z) s + b: tanh columns s = 1, b = 0; sigmoid columns
    s = 1/2, b = 1/2 (sigma(z) = tanh(z/2)/2 + 1/2). Layout: tanh, sigmoid, tanh."""
    parts = [(n_tanh_first, 1.0, 0.0), (n_sigmoid, 0.5, 0.5), (n_tanh_last, 1.0, 0.0)]
    s = xp.concat([xp.full((n,), v, dtype=dtype) for n, v, _ in parts if n])
    b = xp.concat([xp.full((n,), v, dtype=dtype) for n, _, v in parts if n])
    return s, b


def minimal_forward(xp, params, x, y, cfg):
    """-> logits (B, T, C), cache. The per-step count of each line of the loop is in its comment;
    equations are FLMN's [eq n] (docs/model.md), MANN's step the same without the label memory."""
    B, T, D = x.shape
    H, N, W, C, R = cfg.hidden, cfg.n_slots, cfg.width, cfg.n_classes, cfg.reads
    flmn, dtype = cfg.model == "flmn", x.dtype
    RW, n_vec = R * W, (3 * W if cfg.model == "flmn" else 2 * R * W)
    s, b = act_scales(xp, 0, 3 * H, H, dtype)                          # gates [i | f | o | g]
    s_head, b_head = act_scales(xp, n_vec, R, 0, dtype)                # heads [vectors | alpha]
    n_in = D + C
    W_rec = params["W_lstm"][n_in:, :] * s
    u = xp.reshape(xp.concat([x, previous_label_onehot(y, C, dtype)], axis=-1), (B * T, n_in))
    z_in = xp.reshape(u @ (params["W_lstm"][:n_in, :] * s) + params["b_lstm"] * s, (B, T, 1, 4 * H))
    W_head, bias_head = params["W_head"] * s_head, params["b_head"] * s_head
    slots = xp.arange(N)

    h = c = xp.zeros((B, 1, H), dtype=dtype)
    r = xp.zeros((B, 1, RW), dtype=dtype)
    M = M_l = xp.full((B, N, W), 1e-6, dtype=dtype)                    # M is M_f for FLMN
    w_r = w_w = xp.zeros((B, R, N), dtype=dtype)
    w_u = xp.zeros((B, 1, N), dtype=dtype)
    w_lu = xp.astype(xp.arange(R)[:, None] == slots, dtype) + w_r      # lu^j = slot j
    steps = []
    for z_in_t in xp.unstack(xp.permute_dims(z_in, (1, 0, 2, 3))):
        rh, c_prev, w_w_prev = xp.concat([r, h], axis=-1), c, w_w                   # 1
        t = xp.tanh(z_in_t + rh @ W_rec)                                             # 3
        act = t * s + b                                                              # 2
        i, f, o, g = (act[..., j * H:(j + 1) * H] for j in range(4))                 # 4
        c = f * c + i * g                                                            # 3
        tc = xp.tanh(c)                                                              # 1
        h = o * tc                                                                   # 1
        t_head = xp.tanh(h @ W_head + bias_head)                                     # 3
        heads = t_head * s_head + b_head                                             # 2
        if flmn:                                                                     # 4
            k, a, a_l, g_w = (heads[..., j * W:min((j + 1) * W, n_vec + 1)] for j in range(4))
        elif R == 1:                                                                 # 3
            k, a, g_w = heads[..., :W], heads[..., W:2 * W], heads[..., 2 * W:]
        else:                                                                        # 6
            k, a = (xp.reshape(heads[..., j * RW:(j + 1) * RW], (B, R, W)) for j in range(2))
            g_w = xp.reshape(heads[..., 2 * RW:], (B, R, 1))
        diff = w_r - w_lu                                                            # 1
        w_w = w_lu + g_w * diff                                                      # 2  [eq 6]
        keep = 1.0 - (w_lu.mT if R == 1 else w_lu[:, :1, :].mT)                      # 2 (R > 1: 3)
        M = M * keep + (w_w.mT * a if R == 1 else w_w.mT @ a)                        # 4  [eq 7-8]
        if flmn:
            M_l = M_l + w_w_prev.mT * a_l                                            # 3  [eq 9-10]
        kk = xp.vecdot(k, k)[..., None]                                              # 2  (B, R, 1)
        MM = xp.vecdot(M, M)[:, None, :]                                             # 2  (B, 1, N)
        P = xp.sqrt(kk * MM)                                                         # 2
        den = P + COSINE_EPS                                                         # 1
        K = k @ M.mT / den                                                           # 3  [eq 1]
        e = xp.exp(K)                                                                # 1
        w_r = e / xp.sum(e, axis=-1, keepdims=True)                                  # 2  [eq 2]
        r = w_r @ (M_l if flmn else M)                                               # 1  [eq 3]
        if R > 1:
            r = xp.reshape(r, (B, 1, RW))                                            # (1)
        w_sum = w_w + w_r if R == 1 else xp.sum(w_w + w_r, axis=1, keepdims=True)    # 1 (R > 1: 2)
        w_u = cfg.gamma * w_u + w_sum                                                # 2  [eq 4]
        if R == 1:                                                                   # 3  [eq 5]
            w_lu = xp.astype(xp.argmin(w_u, axis=-1, keepdims=True) == slots, dtype)
        else:                                                                        # 5
            idx = xp.argsort(w_u, axis=-1, stable=True)[..., :R]
            w_lu = xp.astype(idx.mT == slots, dtype)
        steps.append(dict(rh=rh, c_prev=c_prev, t=t, i=i, f=f, o=o, g=g, tc=tc, h=h,
                          t_head=t_head, k=k, a=a, a_l=a_l if flmn else None, g_w=g_w,
                          diff=diff, w_w=w_w, w_w_prev=w_w_prev, keep=keep, M=M, M_l=M_l,
                          kk=kk, MM=MM, P=P, den=den, K=K, w_r=w_r, r=r))
    hs = xp.stack([st["h"] for st in steps], axis=1)                  # (B, T, 1, H)
    rs = xp.stack([st["r"] for st in steps], axis=1)                  # (B, T, 1, RW)
    hr = xp.reshape(xp.concat([hs, rs], axis=-1), (B * T, H + RW))
    logits = xp.reshape(hr @ params["W_out"] + params["b_out"], (B, T, C))
    return logits, (u, hr, steps, s, s_head)


def minimal_loss_and_grads(xp, params, x, y, cfg, counter=None):
    """-> loss, grads (the params' keys), forward_count: minimal_forward, the cross-entropy and
    BPTT; forward_count is the counter's total after the forward (None without a counter)."""
    logits, (u, hr, steps, s, s_head) = minimal_forward(xp, params, x, y, cfg)
    forward_count = None if counter is None else sum(counter.counts.values())
    B, T, C = logits.shape
    H, W, R = cfg.hidden, cfg.width, cfg.reads
    flmn, RW = cfg.model == "flmn", R * W
    loss, ce_cache = cross_entropy_forward(logits, y)      # once per episode: flmn_np's own
    dlogits = xp.reshape(cross_entropy_backward(1.0, ce_cache), (B * T, C))
    grads = {"W_out": hr.mT @ dlogits, "b_out": xp.sum(dlogits, axis=0)}
    dhr = xp.reshape(dlogits @ params["W_out"].mT, (B, T, 1, H + RW))
    dh_out, dr_out = xp.unstack(dhr[..., :H], axis=1), xp.unstack(dhr[..., H:], axis=1)
    s2, s2_head = s * s, s_head * s_head
    W_rec_T, W_head_T = params["W_lstm"][u.shape[-1]:, :].mT, params["W_head"].mT
    tiny = xp.finfo(logits.dtype).smallest_normal

    def plus(a, b):   # a + b, where None is a zero gradient (nothing reaches the last step)
        return b if a is None else a + b

    dh = dc = dr = dw_r = dw_w_next = dM = dM_l = None
    dzs, dheads_all = [None] * T, [None] * T
    for step in reversed(range(T)):
        st = steps[step]
        dh, dr = plus(dh, dh_out[step]), plus(dr, dr_out[step])                     # 2
        if R > 1:
            dr = xp.reshape(dr, (B, R, W))                                           # (1)
        M_read = st["M_l"] if flmn else st["M"]
        dw = plus(dw_r, dr @ M_read.mT)                                              # 3  read
        dM_read = st["w_r"].mT * dr if R == 1 else st["w_r"].mT @ dr                 # 2
        dK = st["w_r"] * (dw - xp.sum(dw * st["w_r"], axis=-1, keepdims=True))      # 4  softmax
        dK_scaled = dK / st["den"]                                                   # 1  cosine
        E = dK_scaled * st["K"] * st["P"]                                            # 2
        dk = (dK_scaled @ st["M"]                                                    # 6
              - xp.sum(E, axis=-1, keepdims=True) / (st["kk"] + tiny) * st["k"])
        dM_addr = ((dK_scaled.mT * st["k"] if R == 1 else dK_scaled.mT @ st["k"])    # 8
                   - (xp.sum(E, axis=1, keepdims=True) / (st["MM"] + tiny)).mT * st["M"])
        if flmn:   # the label memory: its read, then its write (no erase) with w_wf[t-1]
            dM_l = plus(dM_l, dM_read)                                               # 1
            dM_total = plus(dM, dM_addr)                                             # 1
            da_l = st["w_w_prev"] @ dM_l                                             # 1
        else:
            dM_total = plus(dM, dM_addr + dM_read)                                   # 2
        dw_w = plus(dw_w_next, st["a"] @ dM_total.mT)                                # 3
        da = st["w_w"] @ dM_total                                                    # 1
        dM = dM_total * st["keep"]                                                   # 1
        if flmn:
            dw_w_next = st["a_l"] @ dM_l.mT                                          # 2
        dg = xp.sum(dw_w * st["diff"], axis=-1, keepdims=True)                       # 2
        dw_r = st["g_w"] * dw_w                                                      # 1
        if flmn:
            parts = [dk, da, da_l, dg]                                               # 1
        elif R == 1:
            parts = [dk, da, dg]
        else:                                                                        # (3)
            parts = [xp.reshape(dk, (B, 1, RW)), xp.reshape(da, (B, 1, RW)),
                     xp.reshape(dg, (B, 1, R))]
        t_head = st["t_head"]
        dheads = xp.concat(parts, axis=-1) * s2_head * (1.0 - t_head * t_head)       # 4
        dh = dh + dheads @ W_head_T                                                  # 2
        tc = st["tc"]
        dc_total = plus(dc, dh * st["o"] * (1.0 - tc * tc))                          # 5
        dact = xp.concat([dc_total * st["g"], dc_total * st["c_prev"], dh * tc,      # 5
                          dc_total * st["i"]], axis=-1)
        dz = dact * s2 * (1.0 - st["t"] * st["t"])                                   # 4
        dc = dc_total * st["f"]                                                      # 1
        drh = dz @ W_rec_T                                                           # 1
        dr, dh = drh[..., :RW], drh[..., RW:]                                        # 2
        dzs[step], dheads_all[step] = dz, dheads

    def flat(arrays):   # T x (B, 1, n) -> (B T, n), rows in the order of u and hr
        stacked = xp.stack(arrays, axis=1)
        return xp.reshape(stacked, (B * T, stacked.shape[-1]))

    dz, dheads, rh = flat(dzs), flat(dheads_all), flat([st["rh"] for st in steps])
    grads["W_lstm"] = xp.concat([u.mT @ dz, rh.mT @ dz], axis=0)
    grads["b_lstm"] = xp.sum(dz, axis=0)
    grads["W_head"] = hr[:, :H].mT @ dheads
    grads["b_head"] = xp.sum(dheads, axis=0)
    return loss, {name: grads[name] for name in params}, forward_count


def measure(name, batch_size=16, samples_per_class=10):
    """-> dict of array operations per time step for MODELS[name], after checking the loss and
    every gradient of minimal_loss_and_grads against flmn_np's (float64)."""
    import array_api_strict as xp
    cfg = ModelConfig(**MODELS[name])
    T = cfg.n_classes * samples_per_class
    params = init_params(cfg, 0, xp, dtype="float64")
    x, y = random_batch(cfg, batch_size, samples_per_class, xp)
    x = xp.astype(x, xp.float64)
    with counting_ops() as counter:
        loss, grads, forward_count = minimal_loss_and_grads(counter.namespace, params, x, y, cfg,
                                                            counter)
    step_count = sum(counter.counts.values())
    expected_loss, _, expected = loss_and_grads(params, x, y, cfg)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-12)
    for key in params:
        np.testing.assert_allclose(np.asarray(grads[key]), np.asarray(expected[key]),
                                   rtol=1e-9, atol=1e-12, err_msg=key)
    flmn_np_count = sum(count_ops(cfg, batch_size, samples_per_class).values())
    return {"minimal_forward": round(forward_count / T, 1),
            "minimal_step": round(step_count / T, 1), "flmn_np_step": round(flmn_np_count / T, 1)}


if __name__ == "__main__":
    argparse.ArgumentParser(prog="python benchmarks/op_floor.py",
                            description=__doc__.split("\n\n")[0]).parse_args()
    print("array operations per time step (B = 16, T = 50), counted as "
          "`python -m flmn_np.bench` counts;")
    print("the fewest-operations code checked against flmn_np: same loss and gradients (float64)")
    header = ("model", "fewest: forward", "fewest: step", "flmn_np: step + Adam")
    print(f"{header[0]:<12} {header[1]:>16} {header[2]:>13} {header[3]:>21}")
    for name in MODELS:
        m = measure(name)
        print(f"{name:<12} {m['minimal_forward']:>16} {m['minimal_step']:>13} "
              f"{m['flmn_np_step']:>21}")
