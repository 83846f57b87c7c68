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

The recurrent rows [r | h][t] of all steps live in one buffer rh (T + 1, B, RW + H): the
kernels write r and h into row t + 1, so the concat of models.core_step_forward is not needed
and rh[:-1] is every step's rh_prev for dW_rec. The output layer reads rh[1:], so it uses W_out
with its rows in [r; h] order (W_out_rh); its gradients go back to W_out's [h; r] order. Every
sum of two gradients happens inside the kernel that consumes it. Outside the loop everything is
as in models.py: one product for the input part of z, one for the output layer, one per weight
gradient.
"""
from typing import NamedTuple, Any

from . import kernels, step_kernels
from .addressing import COSINE_EPS
from .backend import array_namespace
from .ops import model_major, previous_label_onehot, time_major, transposed


def flat_matmul(a, W):
    """(T, B, n) @ (n, m) as one 2-D product (T B, n) @ (n, m), as models.py does for one
    model (ops.model_major and time_major with no model axis)."""
    xp = array_namespace(a, W)
    return time_major(xp.matmul(model_major(a, ()), W), a.shape[0])


class EpisodeCache(NamedTuple):
    """What episode_backward needs from episode_forward."""
    u: Any              # (T, B, D + C) the inputs [x; onehot(y[t-1])]
    rh: Any             # (T + 1, B, RW + H) the recurrent rows [r | h][t], row 0 the initial
    step_caches: Any    # per step (lstm cache, memory-step cache)
    mem_T: Any          # the memory after the last step
    params: Any
    W_rec: Any          # the rows of W_lstm for [r; h][t-1]
    cfg: Any


def _W_out_rh(params, H):
    """W_out's rows [h; r] reordered to [r; h], the layout of rh."""
    xp = array_namespace(params["W_out"])
    return xp.concat([params["W_out"][H:, :], params["W_out"][:H, :]], axis=0)


def episode_forward(params, W_in, W_rec, x, y, cfg):
    """models.episode_forward on the 'step' level: the same (logits, cache). W_in, W_rec: the
    rows of W_lstm for [x; onehot(y[t-1])] and for [r; h][t-1] (models._split_W_lstm)."""
    xp = array_namespace(x)
    B, T, _ = x.shape
    H, RW = cfg.hidden, cfg.memory.read_size(cfg)
    u = xp.concat([x, previous_label_onehot(y, cfg.n_classes, x.dtype)], axis=-1)
    u = xp.permute_dims(u, (1, 0, 2))                                  # (T, B, D + C)
    z_in = flat_matmul(u, W_in) + params["b_lstm"]                     # (T, B, 4H)

    step_forward = step_kernels.STEP_FORWARD[cfg.model]
    rh = xp.zeros((T + 1, B, RW + H), dtype=x.dtype)                   # r = h = 0 before step 0
    c, mem = xp.zeros((B, H), dtype=x.dtype), cfg.memory.initial_memory(cfg, B, xp, x.dtype)
    step_caches = []
    for t in range(T):
        h, c, lstm_cache = kernels.lstm_cell_forward_sum(z_in[t, ...], xp.matmul(rh[t, ...], W_rec),
                                                         c, rh[t + 1, :, RW:])
        _, mem, mem_cache = step_forward(xp.matmul(h, params["W_head"]), params["b_head"], mem,
                                         cfg, COSINE_EPS, rh=rh[t + 1, ...])
        step_caches.append((lstm_cache, mem_cache))
    logits = flat_matmul(rh[1:, ...], _W_out_rh(params, H)) + params["b_out"]   # (T, B, C)
    return xp.permute_dims(logits, (1, 0, 2)), EpisodeCache(u, rh, step_caches, mem, params,
                                                            W_rec, cfg)


def episode_backward(dlogits, cache):
    """models.episode_backward on the 'step' level: the same grads."""
    u, rh, step_caches, mem_T, params, W_rec, cfg = cache
    xp = array_namespace(dlogits)
    T, B, _ = u.shape
    H, RW = cfg.hidden, cfg.memory.read_size(cfg)

    def flat(a):  # (T, B, n) -> (T B, n), for the weight-gradient products
        return xp.reshape(a, (T * B, a.shape[-1]))

    dlogits = xp.permute_dims(dlogits, (1, 0, 2))                      # (T, B, C)
    dW_out_rh = xp.matmul(flat(rh[1:, ...]).mT, flat(dlogits))        # rows [r; h]
    grads = {"W_out": xp.concat([dW_out_rh[RW:, :], dW_out_rh[:RW, :]], axis=0),
             "b_out": xp.sum(flat(dlogits), axis=0)}
    drh_out = flat_matmul(dlogits, transposed(_W_out_rh(params, H)))   # (T, B, RW + H)
    W_head_T, W_rec_T = transposed(params["W_head"]), transposed(W_rec)

    step_backward = step_kernels.STEP_BACKWARD[cfg.model]
    dz = xp.empty((T, B, 4 * H), dtype=dlogits.dtype)
    dheads = xp.empty((T, B, params["W_head"].shape[-1]), dtype=dlogits.dtype)
    drh_next = xp.zeros((B, RW + H), dtype=dlogits.dtype)              # nothing after step T-1
    dc, dmem = xp.zeros((B, H), dtype=dlogits.dtype), cfg.memory.zero_dmemory(mem_T)
    for t in reversed(range(T)):
        lstm_cache, mem_cache = step_caches[t]
        _, dmem = step_backward(drh_next, drh_out[t, ...], dmem, mem_cache, cfg, COSINE_EPS,
                                dheads=dheads[t, ...])
        _, dc = kernels.lstm_cell_backward_sum(xp.matmul(dheads[t, ...], W_head_T),
                                               drh_next[:, RW:], drh_out[t, :, RW:], dc,
                                               lstm_cache, dz[t, ...])
        drh_next = xp.matmul(dz[t, ...], W_rec_T)                       # (B, RW + H)

    grads["W_lstm"] = xp.matmul(flat(xp.concat([u, rh[:-1, ...]], axis=-1)).mT, flat(dz))
    grads["b_lstm"] = xp.sum(flat(dz), axis=0)
    grads["W_head"] = xp.matmul(flat(rh[1:, :, RW:]).mT, flat(dheads))
    grads["b_head"] = xp.sum(flat(dheads), axis=0)
    return {name: grads[name] for name in params}
