"""The FLMN memory step: feature memory M_f written by LRUA, label memory M_l written
recursively, read from M_l through addresses found in M_f.
[FLMN §4, eq 1-10; docs/model.md#flmn-step]

The controller emits heads = h[t] W_head + b_head, laid out as [k | a_f | a_l | alpha]
(widths W, W, W, 1). Derivation of the step backward: docs/derivations.md#flmn-step.
"""
from typing import NamedTuple, Any

from .addressing import address_forward, address_backward, read_forward, read_backward
from .backend import array_namespace
from .memory import (least_used, usage_forward, write_backward, write_forward,
                     write_weights_backward, write_weights_forward)
from .ops import interface_backward, interface_forward


class FLMNMemory(NamedTuple):
    """The FLMN's recurrent memory state after step t (its gradient has the same type)."""
    M_f: Any    # (B, N, W) feature memory
    M_l: Any    # (B, N, W) label memory
    w_r: Any    # (B, 1, N) read weights
    w_wf: Any   # (B, 1, N) feature write weights; the next step's label write weights [eq 9]
    w_u: Any    # (B, N) usage; no gradient (None in a gradient)
    w_lu: Any   # (B, 1, N) least-used one-hot; no gradient (None in a gradient)


def head_size(cfg):
    """Width of the controller's interface output: k, a_f, a_l (W each) and alpha (1)."""
    return 3 * cfg.width + 1


def read_size(cfg):
    """Width of r[t]: one read of the label memory."""
    return cfg.width


def initial_memory(cfg, batch_size, xp, dtype):
    """Memories filled with 1e-6, w_r = w_wf = w_u = 0, w_lu = one-hot of the first slot
    [docs/model.md#initial-state]."""
    B, N, W = batch_size, cfg.n_slots, cfg.width
    M = xp.full((B, N, W), 1e-6, dtype=dtype)
    zeros = xp.zeros((B, 1, N), dtype=dtype)
    w_lu = xp.astype(xp.arange(N) == 0, dtype) + zeros
    return FLMNMemory(M_f=M, M_l=M, w_r=zeros, w_wf=zeros,
                      w_u=xp.zeros((B, N), dtype=dtype), w_lu=w_lu)


def zero_dmemory(mem):
    """A zero gradient for `mem` (what reaches the last step from the future)."""
    xp = array_namespace(mem.M_f)
    return FLMNMemory(M_f=xp.zeros_like(mem.M_f), M_l=xp.zeros_like(mem.M_l),
                      w_r=xp.zeros_like(mem.w_r), w_wf=xp.zeros_like(mem.w_wf),
                      w_u=None, w_lu=None)


def memory_step_forward(heads, mem_prev, cfg):
    """One FLMN memory step t                          [FLMN §4, eq 1-10; docs/model.md#flmn-step]

        k, a_f, a_l = tanh(heads);  g_w = sigmoid(alpha)
        w_wf[t] = g_w w_r[t-1] + (1 - g_w) w_lu[t-1]                   [eq 6]
        M_f[t]  = M_f[t-1] (1 - w_lu[t-1]) + w_wf[t] a_f[t]            [eq 7-8]
        w_wl[t] = w_wf[t-1];  M_l[t] = M_l[t-1] + w_wl[t] a_l[t]      [eq 9-10]
        w_r[t]  = softmax_i cos(k[t], M_f[t](i))                      [eq 1-2]
        r[t]    = sum_i w_r[t](i) M_l[t](i)                           [eq 3]
        w_u[t]  = gamma w_u[t-1] + w_wf[t] + w_r[t];  w_lu[t] = onehot(argmin w_u[t])  [eq 4-5]

    heads (B, 3W+1), mem_prev: FLMNMemory  ->  r (B, W), mem: FLMNMemory, cache
    """
    xp = array_namespace(heads)
    B, W = heads.shape[0], cfg.width
    tanh_heads, g_w, act_cache = interface_forward(heads, 3 * W)       # [k | a_f | a_l], (B, 1)
    k = xp.reshape(tanh_heads[:, :W], (B, 1, W))
    a_f = xp.reshape(tanh_heads[:, W:2 * W], (B, 1, W))
    a_l = xp.reshape(tanh_heads[:, 2 * W:], (B, 1, W))

    w_wf, ww_cache = write_weights_forward(g_w, mem_prev.w_r, mem_prev.w_lu)
    M_f, wf_cache = write_forward(mem_prev.M_f, w_wf, a_f, erase=mem_prev.w_lu[:, 0, :])
    M_l, wl_cache = write_forward(mem_prev.M_l, mem_prev.w_wf, a_l)   # w_wl[t] = w_wf[t-1]
    w_r, addr_cache = address_forward(k, M_f, cfg.cosine_eps)
    r, read_cache = read_forward(w_r, M_l)                             # (B, 1, W)

    w_u = usage_forward(mem_prev.w_u, cfg.gamma, w_wf, w_r)
    w_lu = least_used(w_u, 1)                                          # constant in backward
    mem = FLMNMemory(M_f=M_f, M_l=M_l, w_r=w_r, w_wf=w_wf, w_u=w_u, w_lu=w_lu)
    cache = (act_cache, ww_cache, wf_cache, wl_cache, addr_cache, read_cache)
    return xp.reshape(r, (B, W)), mem, cache


def memory_step_backward(dr, dmem, cache):
    """Backward of one FLMN memory step (docs/derivations.md#flmn-step).

    Inputs:
        dr     (B, W)  gradient reaching r[t] (output layer at t, controller at t+1)
        dmem   FLMNMemory of the gradients reaching the state after step t from step t+1:
               M_f, M_l (B, N, W), w_r, w_wf (B, 1, N); w_u, w_lu None
        cache  from memory_step_forward
    Returns:
        dheads     (B, 3W+1)  gradient of the interface [k | a_f | a_l | alpha]
        dmem_prev  FLMNMemory for the state after step t-1, same shapes, w_u = w_lu = None

    Walks the forward in reverse. Two gradients cross time besides M_f and M_l:
    dw_r[t-1] (through the gate, eq 6) and dw_wf[t-1] (through the label write, eq 9).
    """
    act_cache, ww_cache, wf_cache, wl_cache, addr_cache, read_cache = cache
    xp = array_namespace(dr)
    B, W = dr.shape
    dw_r, dM_l = read_backward(xp.reshape(dr, (B, 1, W)), read_cache)
    dk, dM_f = address_backward(dw_r + dmem.w_r, addr_cache)
    dM_l_prev, dw_wf_prev, da_l = write_backward(dM_l + dmem.M_l, wl_cache)
    dM_f_prev, dw_wf, da_f = write_backward(dM_f + dmem.M_f, wf_cache)
    dg_w, dw_r_prev = write_weights_backward(dw_wf + dmem.w_wf, ww_cache)

    dtanh_heads = xp.concat([dk, da_f, da_l], axis=-1)                # (B, 1, 3W)
    dheads = interface_backward(xp.reshape(dtanh_heads, (B, 3 * W)), dg_w, act_cache)
    dmem_prev = FLMNMemory(M_f=dM_f_prev, M_l=dM_l_prev, w_r=dw_r_prev, w_wf=dw_wf_prev,
                           w_u=None, w_lu=None)
    return dheads, dmem_prev
