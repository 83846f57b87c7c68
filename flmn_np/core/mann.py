"""The MANN memory step (Santoro et al. 2016): one memory M, R heads that read by content
and write by LRUA into the least-used or the last-read slots.   [MANN; docs/model.md#mann-step]

The controller emits heads = h[t] W_head + b_head, laid out as [k | a | alpha] with widths
R*W, R*W, R; with cfg.mann_add == 'key' there is no separate a (the key is written, as in
the paper's text): [k | alpha]. Derivation: docs/derivations.md#mann-step.
"""
from typing import NamedTuple, Any

from .addressing import address_forward, address_backward, read_forward, read_backward
from .backend import array_namespace
from .memory import (least_used, usage_forward, write_backward, write_forward,
                     write_weights_backward, write_weights_forward)
from .ops import interface_backward, interface_forward


class MANNMemory(NamedTuple):
    """MANN's recurrent memory state after step t (its gradient has the same type)."""
    M: Any      # (B, N, W) memory
    w_r: Any    # (B, R, N) read weights
    w_w: Any    # (B, R, N) write weights of this step (not used by the next step: for inspection)
    w_u: Any    # (B, N) usage; no gradient (None in a gradient)
    w_lu: Any   # (B, R, N) one-hots lu^1..lu^R of the R least-used slots; no gradient


class MANNStepCache(NamedTuple):
    """What memory_step_backward needs from memory_step_forward."""
    act: Any              # ops.interface_forward's cache
    write_weights: Any    # memory.write_weights_forward's cache
    write: Any            # memory.write_forward's cache
    address: Any          # addressing.address_forward's cache
    read: Any             # addressing.read_forward's cache
    reads: int            # R
    key_is_add: bool      # cfg.mann_add == 'key': the key is also the add vector


def head_size(cfg):
    """k (R W), a (R W, unless the key is the add vector) and alpha (R)."""
    R, W = cfg.reads, cfg.width
    return (R * W if cfg.mann_add == "key" else 2 * R * W) + R


def read_size(cfg):
    """Width of r[t] = [r^1; ...; r^R]."""
    return cfg.reads * cfg.width


def initial_memory(cfg, batch_size, xp, dtype):
    """M filled with 1e-6, w_r = w_u = 0, lu^j = one-hot of slot j (1-based; code index j-1)
    [docs/model.md#initial-state]."""
    B, N, W, R = batch_size, cfg.n_slots, cfg.width, cfg.reads
    w_lu = xp.astype(xp.arange(R)[:, None] == xp.arange(N), dtype)   # (R, N)
    zeros = xp.zeros((B, R, N), dtype=dtype)
    return MANNMemory(M=xp.full((B, N, W), 1e-6, dtype=dtype), w_r=zeros, w_w=zeros,
                      w_u=xp.zeros((B, N), dtype=dtype), w_lu=w_lu + zeros)


def zero_dmemory(mem):
    """A zero gradient for `mem` (what reaches the last step from the future)."""
    xp = array_namespace(mem.M)
    return MANNMemory(M=xp.zeros_like(mem.M), w_r=xp.zeros_like(mem.w_r), w_w=None, w_u=None, w_lu=None)


def memory_step_forward(heads, mem_prev, cfg):
    """One MANN step t (docs/model.md#mann-step), for heads j = 1..R:

        k^j, a^j = tanh(heads);  g_w^j = sigmoid(alpha^j)
        w_w^j[t] = g_w^j w_r^j[t-1] + (1 - g_w^j) lu^j[t-1]
        M[t](i)  = M[t-1](i) (1 - lu^1[t-1](i)) + sum_j w_w^j[t](i) a^j[t]
        w_r^j[t] = softmax_i cos(k^j[t], M[t](i));  r^j[t] = sum_i w_r^j[t](i) M[t](i)
        w_u[t]   = gamma w_u[t-1] + sum_j (w_r^j[t] + w_w^j[t]);  lu[t] = R least used of w_u[t]

    heads (B, head_size), mem_prev: MANNMemory  ->  r (B, R W), mem: MANNMemory, cache
    """
    xp = array_namespace(heads)
    B, R, W = heads.shape[0], cfg.reads, cfg.width
    n_vec = head_size(cfg) - R                                         # the tanh part: k [| a]
    tanh_heads, g_w, act_cache = interface_forward(heads, n_vec)      # [k | a] (B, n_vec), (B, R)
    k = xp.reshape(tanh_heads[:, :R * W], (B, R, W))
    a = k if cfg.mann_add == "key" else xp.reshape(tanh_heads[:, R * W:], (B, R, W))

    w_w, ww_cache = write_weights_forward(g_w, mem_prev.w_r, mem_prev.w_lu)
    M, write_cache = write_forward(mem_prev.M, w_w, a, erase=mem_prev.w_lu[:, 0, :])
    w_r, addr_cache = address_forward(k, M, cfg.cosine_eps)
    r, read_cache = read_forward(w_r, M)                               # (B, R, W)

    w_u = usage_forward(mem_prev.w_u, cfg.gamma, w_r, w_w)
    w_lu = least_used(w_u, R)                                          # constant in backward
    cache = MANNStepCache(act_cache, ww_cache, write_cache, addr_cache, read_cache, R,
                          cfg.mann_add == "key")
    return xp.reshape(r, (B, R * W)), MANNMemory(M=M, w_r=w_r, w_w=w_w, w_u=w_u, w_lu=w_lu), cache


def memory_step_backward(dr, dmem, cache):
    """Backward of one MANN memory step (docs/derivations.md#mann-step).

    Inputs:
        dr     (B, R W)  gradient reaching r[t] = [r^1; ...; r^R]
        dmem   MANNMemory of the gradients reaching the state after step t from step t+1:
               M (B, N, W), w_r (B, R, N); w_w, w_u, w_lu None
        cache  from memory_step_forward
    Returns:
        dheads     (B, head_size)  gradient of the interface [k | a | alpha] (or [k | alpha])
        dmem_prev  MANNMemory for the state after step t-1, same shapes, w_w = w_u = w_lu = None
    """
    act_cache, ww_cache, write_cache, addr_cache, read_cache, R, key_is_add = cache
    xp = array_namespace(dr)
    B, W = dr.shape[0], dr.shape[1] // R
    dw_r, dM = read_backward(xp.reshape(dr, (B, R, W)), read_cache)
    dk, dM_addr = address_backward(dw_r + dmem.w_r, addr_cache)
    dM_prev, dw_w, da = write_backward(dM + dM_addr + dmem.M, write_cache)
    dg_w, dw_r_prev = write_weights_backward(dw_w, ww_cache)

    if key_is_add:   # a = k: one tanh, two consumers
        dtanh_heads = xp.reshape(dk + da, (B, R * W))
    else:
        dtanh_heads = xp.concat([xp.reshape(dk, (B, R * W)), xp.reshape(da, (B, R * W))], axis=-1)
    dheads = interface_backward(dtanh_heads, dg_w, act_cache)
    return dheads, MANNMemory(M=dM_prev, w_r=dw_r_prev, w_w=None, w_u=None, w_lu=None)
