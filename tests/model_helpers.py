"""Helpers for the tests of whole models (test_models, test_stack, test_step_level_stack): the
tiny model configurations, a plain reference of docs/model.md's equations, and synthetic one-shot
episodes that only a memory can solve."""
import numpy as np

from flmn_np.core.models import ModelConfig
from flmn_np.gradcheck import TINY

CONFIGS = {"flmn": dict(model="flmn"), "mann-R1": dict(model="mann", reads=1),
           "mann-R4": dict(model="mann", reads=4), "mann-R2-key": dict(model="mann", reads=2, mann_add="key"),
           # the cosine's epsilon inside each norm (the default puts it on the product)
           "flmn-eps-inside": dict(model="flmn", cosine_eps="inside"),
           "mann-R4-eps-inside": dict(model="mann", reads=4, cosine_eps="inside")}


def tiny(name, slots=6):
    return ModelConfig(slots=slots, **TINY, **CONFIGS[name])


def _cos(k, M, placement, eps=1e-8):
    if placement == "inside":
        return np.array([k @ m / (np.sqrt(k @ k + eps) * np.sqrt(m @ m + eps)) for m in M])
    return np.array([k @ m / (np.sqrt(k @ k) * np.sqrt(m @ m) + eps) for m in M])


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def reference_logits(p, x, y, cfg):
    """docs/model.md written out naively for one episode x (T, D), y (T,): returns logits (T, C)."""
    sig = lambda z: 1 / (1 + np.exp(-z))
    T, D = x.shape
    H, N, W, C, R = cfg.hidden, cfg.n_slots, cfg.width, cfg.n_classes, cfg.reads
    h, c = np.zeros(H), np.zeros(H)
    out = []
    if cfg.model == "flmn":
        M_f, M_l = np.full((N, W), 1e-6), np.full((N, W), 1e-6)
        w_r, w_u, w_wf_prev = np.zeros(N), np.zeros(N), np.zeros(N)
        w_lu = np.eye(N)[0]
        r = np.zeros(W)
    else:
        M = np.full((N, W), 1e-6)
        w_r, w_u = np.zeros((R, N)), np.zeros(N)
        lu = np.eye(N)[:R]
        r = np.zeros(R * W)
    for t in range(T):
        y_prev = np.eye(C)[y[t - 1]] if t > 0 else np.zeros(C)
        z = np.concatenate([x[t], y_prev, r, h]) @ p["W_lstm"] + p["b_lstm"]
        i, f, o, g = sig(z[:H]), sig(z[H:2 * H]), sig(z[2 * H:3 * H]), np.tanh(z[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hd = h @ p["W_head"] + p["b_head"]
        if cfg.model == "flmn":
            k, a_f, a_l = np.tanh(hd[:W]), np.tanh(hd[W:2 * W]), np.tanh(hd[2 * W:3 * W])
            gate = sig(hd[3 * W])
            w_wf = gate * w_r + (1 - gate) * w_lu                               # eq 6
            M_f = M_f * (1 - w_lu)[:, None] + np.outer(w_wf, a_f)               # eq 7-8
            M_l = M_l + np.outer(w_wf_prev, a_l)                                # eq 9-10
            w_r = _softmax(_cos(k, M_f, cfg.cosine_eps))                                        # eq 1-2
            r = w_r @ M_l                                                       # eq 3
            w_u = cfg.gamma * w_u + w_wf + w_r                                  # eq 4
            w_lu = np.eye(N)[np.argmin(w_u)]                                    # eq 5
            w_wf_prev = w_wf
        else:
            ks = np.tanh(hd[:R * W]).reshape(R, W)
            adds = ks if cfg.mann_add == "key" else np.tanh(hd[R * W:2 * R * W]).reshape(R, W)
            gates = sig(hd[-R:])
            w_w = gates[:, None] * w_r + (1 - gates[:, None]) * lu
            M = M * (1 - lu[0])[:, None] + sum(np.outer(w_w[j], adds[j]) for j in range(R))
            w_r = np.stack([_softmax(_cos(ks[j], M, cfg.cosine_eps)) for j in range(R)])
            r = (w_r @ M).reshape(-1)
            w_u = cfg.gamma * w_u + w_r.sum(0) + w_w.sum(0)
            lu = np.eye(N)[np.argsort(w_u, kind="stable")[:R]]
        out.append(np.concatenate([h, r]) @ p["W_out"] + p["b_out"])
    return np.stack(out)


def synthetic_episodes(rng, batch_size, C=5, S=10, D=64, flip=0.05):
    """One-shot episodes of random binary prototypes (fresh every episode) with pixel noise:
    only memory can tell the classes apart."""
    protos = rng.random((batch_size, C, D)) < 0.5
    y = np.stack([rng.permutation(np.repeat(np.arange(C), S)) for _ in range(batch_size)])
    x = protos[np.arange(batch_size)[:, None], y] ^ (rng.random((batch_size, C * S, D)) < flip)
    return x.astype(np.float32), y
