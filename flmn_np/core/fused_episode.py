"""models.episode_forward and episode_backward on the 'step' level: 8 launches per time step.

The same model and the same numbers as models.py (docs/derivations.md#bptt), laid out so that
each time step is two products with weights (cuBLAS) and two kernels, forward and backward:

    forward   z_rec = [r; h][t-1] W_rec                              matmul
              h, c = LSTM(z_in[t] + z_rec, c[t-1])                   kernels.LSTM_FORWARD_SUM
              heads = h W_head                                       matmul
              r, mem = memory step(heads + b_head, mem[t-1])         step_kernels *_FORWARD
    backward  dheads, dmem[t-1] = step backward(dr, dmem[t])          step_kernels *_BACKWARD
              dh_head = dheads W_head^T                              matmul
              dz, dc[t-1] = LSTM backward(dh_head + dh, dc[t])        kernels.LSTM_BACKWARD_SUM
              d[r; h][t-1] = dz W_rec^T                              matmul

A stack of G models (lead = (G,), docs/derivations.md#a-stack-of-models) takes the same
launches: inside the loop the E = G B episodes are one batch axis, model-major (episode
e = s B + b), each product with weights is one batched product per model (ops.per_model_matmul:
(G, B, n) @ (G, n, m)), and each memory-step kernel adds model s's row of b_head to its B
episodes (the kernels' bias_every = B). For one model (lead = ()) every product is the plain
(B, n) @ (n, m).

The recurrent rows [r | h][t] of all steps live in one buffer rh (T + 1, E, RW + H): the
kernels write r and h into row t + 1, so the concat of models.core_step_forward is not needed
and rh[:-1] is every step's rh_prev for dW_rec. The output layer reads rh[1:], so it uses W_out
with its rows in [r; h] order (W_out_rh); its gradients go back to W_out's [h; r] order. Every
sum of two gradients happens inside the kernel that consumes it. Outside the loop everything is
as in models.py: one product per model for the input part of z, one for the output layer, one
per weight gradient, on rows laid out model-major (*lead, T B, n) (ops.model_major).
"""
import math
from typing import NamedTuple, Any

from . import kernels, step_kernels
from .addressing import COSINE_EPS
from .backend import array_namespace
from .ops import (episodes_of_rows, model_major, per_model_matmul, previous_label_onehot,
                  rows_of_episodes, time_major, transposed)


class EpisodeCache(NamedTuple):
    """What episode_backward needs from episode_forward."""
    u: Any              # (*lead, T B, D + C) the inputs [x; onehot(y[t-1])], model-major
    rh: Any             # (T + 1, E, RW + H) the recurrent rows [r | h][t], row 0 the initial
    step_caches: Any    # per step (lstm cache, memory-step cache)
    mem_T: Any          # the memory after the last step
    params: Any
    W_rec: Any          # (*lead, RW + H, 4H) the rows of W_lstm for [r; h][t-1]
    cfg: Any


def _W_out_rh(params, H):
    """W_out's rows [h; r] reordered to [r; h], the layout of rh: (*lead, RW + H, C)."""
    xp = array_namespace(params["W_out"])
    return xp.concat([params["W_out"][..., H:, :], params["W_out"][..., :H, :]], axis=-2)


def _contiguous(a):
    """a laid out row by row: a stack's b_head (G, n) is a strided view of Adam's flat buffer
    (optim.Adam), and the kernels read C-contiguous rows. One copy per episode, none when a is
    already contiguous in that order (one model's 1-D slice)."""
    xp = array_namespace(a)
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def episode_forward(params, W_in, W_rec, x, y, cfg):
    """models.episode_forward on the 'step' level: the same (logits, cache). W_in, W_rec: the
    rows of W_lstm for [x; onehot(y[t-1])] and for [r; h][t-1] (models._split_W_lstm).
    x (*lead, B, T, D), y (*lead, B, T), lead = the params' model shape."""
    xp = array_namespace(x)
    lead = tuple(params["b_out"].shape[:-1])
    B, T = x.shape[-3], x.shape[-2]
    E, H, RW = math.prod(lead) * B, cfg.hidden, cfg.memory.read_size(cfg)
    u = xp.concat([x, previous_label_onehot(y, cfg.n_classes, x.dtype)], axis=-1)
    u = rows_of_episodes(u, lead)                                       # (*lead, T B, D + C)
    z_in = time_major(xp.matmul(u, W_in) + params["b_lstm"][..., None, :], T)   # (T, E, 4H)

    step_forward = step_kernels.STEP_FORWARD[cfg.model]
    b_head = _contiguous(params["b_head"])
    rh = xp.zeros((T + 1, E, RW + H), dtype=x.dtype)                   # r = h = 0 before step 0
    c, mem = xp.zeros((E, H), dtype=x.dtype), cfg.memory.initial_memory(cfg, E, xp, x.dtype)
    step_caches = []
    for t in range(T):
        h, c, lstm_cache = kernels.lstm_cell_forward_sum(z_in[t, ...],
                                                         per_model_matmul(rh[t, ...], W_rec),
                                                         c, rh[t + 1, :, RW:])
        _, mem, mem_cache = step_forward(per_model_matmul(h, params["W_head"]),
                                         b_head, mem, cfg, COSINE_EPS,
                                         rh=rh[t + 1, ...])
        step_caches.append((lstm_cache, mem_cache))
    logits = (xp.matmul(model_major(rh[1:, ...], lead), _W_out_rh(params, H))
              + params["b_out"][..., None, :])                          # (*lead, T B, C)
    logits = episodes_of_rows(logits, lead, B)                          # (*lead, B, T, C)
    return logits, EpisodeCache(u, rh, step_caches, mem, params, W_rec, cfg)


def episode_backward(dlogits, cache):
    """models.episode_backward on the 'step' level: the same grads."""
    u, rh, step_caches, mem_T, params, W_rec, cfg = cache
    xp = array_namespace(dlogits)
    lead = tuple(params["b_out"].shape[:-1])
    T, E = rh.shape[0] - 1, rh.shape[1]
    H, RW = cfg.hidden, cfg.memory.read_size(cfg)

    dlogits = rows_of_episodes(dlogits, lead)                           # (*lead, T B, C)
    rh_out = model_major(rh[1:, ...], lead)                             # (*lead, T B, RW + H)
    dW_out_rh = xp.matmul(rh_out.mT, dlogits)                           # rows [r; h]
    grads = {"W_out": xp.concat([dW_out_rh[..., RW:, :], dW_out_rh[..., :RW, :]], axis=-2),
             "b_out": xp.sum(dlogits, axis=-2)}
    drh_out = time_major(xp.matmul(dlogits, transposed(_W_out_rh(params, H))), T)  # (T, E, RW + H)
    W_head_T, W_rec_T = transposed(params["W_head"]), transposed(W_rec)

    step_backward = step_kernels.STEP_BACKWARD[cfg.model]
    dz = xp.empty((T, E, 4 * H), dtype=dlogits.dtype)
    dheads = xp.empty((T, E, params["W_head"].shape[-1]), dtype=dlogits.dtype)
    drh_next = xp.zeros((E, RW + H), dtype=dlogits.dtype)              # nothing after step T-1
    dc, dmem = xp.zeros((E, H), dtype=dlogits.dtype), cfg.memory.zero_dmemory(mem_T)
    for t in reversed(range(T)):
        lstm_cache, mem_cache = step_caches[t]
        _, dmem = step_backward(drh_next, drh_out[t, ...], dmem, mem_cache, cfg, COSINE_EPS,
                                dheads=dheads[t, ...])
        _, dc = kernels.lstm_cell_backward_sum(per_model_matmul(dheads[t, ...], W_head_T),
                                               drh_next[:, RW:], drh_out[t, :, RW:], dc,
                                               lstm_cache, dz[t, ...])
        drh_next = per_model_matmul(dz[t, ...], W_rec_T)                # (E, RW + H)

    dz, dheads = model_major(dz, lead), model_major(dheads, lead)       # (*lead, T B, n)
    urh = xp.concat([u, model_major(rh[:-1, ...], lead)], axis=-1)      # (*lead, T B, D+C+RW+H)
    grads["W_lstm"] = xp.matmul(urh.mT, dz)
    grads["b_lstm"] = xp.sum(dz, axis=-2)
    grads["W_head"] = xp.matmul(rh_out[..., RW:].mT, dheads)
    grads["b_head"] = xp.sum(dheads, axis=-2)
    return {name: grads[name] for name in params}
