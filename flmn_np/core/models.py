"""FLMN and MANN over a whole episode: LSTM controller + a memory step, forward and BPTT.

    z[t]      = [x[t]; onehot(y[t-1]); r[t-1]; h[t-1]] W_lstm + b_lstm      (gates, (B, 4H))
    h[t], c[t] = LSTM(z[t], c[t-1])
    heads[t]  = h[t] W_head + b_head                                         (interface)
    r[t], mem[t] = memory step (flmn.py or mann.py)
    logits[t] = [h[t]; r[t]] W_out + b_out

Reading one model: start at the end of this file, `step_forward` / `step_backward`, the model
one time step at a time with every product inside the step (the plain form, tested equal to
the episode code); then `episode_forward` / `episode_backward`, the same numbers with the
products hoisted out of the loop; then fused_episode.py, the 'step' level's layout of the same
loop (levels.py). With one model, lead = () below and every "per model" product is a plain one.

Speed: the parts of z that do not depend on the recurrence (x and the previous label) are one
matrix product for all T steps before the loop, the output layer is one product after it, and
every weight gradient is one product after the backward loop. Inside the loop only the
recurrent products and the memory step remain. Derivation: docs/derivations.md#bptt.

A stack of G independent models (docs/derivations.md#a-stack-of-models; letters:
docs/model.md#notation): every parameter carries the leading model shape `lead`, () for one
model or (G,) for a stack, and an episode batch is (*lead, B, T, D). Inside the time loop the
parameter-free parts (the LSTM cell and the memory step) see the E = prod(lead) B episodes as
one batch axis, model-major; only the products with weights are batched per model,
(*lead, B, n) @ (*lead, n, m) (per_model_matmul). Outside it each model's rows are laid out
time-major, (*lead, T B, n) (ops.rows_of_episodes), one product per model over all T steps.

A memory module (flmn.py, mann.py) provides six functions:
    head_size(cfg), read_size(cfg)               widths of the interface heads and of r[t]
    initial_memory(cfg, batch_size, xp, dtype)   its memory NamedTuple at t = 0
    zero_dmemory(mem)                            the zero gradient of that NamedTuple
    memory_step_forward(heads, mem_prev, cfg)    ->  r (E, read_size), mem, cache
    memory_step_backward(dr, dmem, cache)        ->  dheads (E, head_size), dmem_prev
"""
import dataclasses
import math
from typing import NamedTuple, Any

import numpy as np

from . import flmn, fused_episode, levels, mann, step_kernels
from .addressing import COSINE_EPS_PLACEMENTS
from .backend import array_namespace
from .lstm import lstm_cell_forward, lstm_cell_backward
from .ops import (cross_entropy_backward, cross_entropy_forward, episodes_of_rows, model_major,
                  per_model_matmul, previous_label_onehot, rows_of_episodes, time_major,
                  transposed)

MEMORIES = {"flmn": flmn, "mann": mann}
DEFAULT_SLOTS = {"flmn": 64, "mann": 128}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of a model; defaults and their sources: docs/model.md#training-defaults."""
    model: str = "flmn"          # 'flmn' or 'mann'
    input_size: int = 400        # D = 20 * 20
    n_classes: int = 5           # C
    hidden: int = 200            # H, LSTM units
    slots: int | None = None     # N; None -> 64 for FLMN, 128 for MANN
    width: int = 40              # W, slot width
    reads: int = 1               # R, MANN's read/write heads (FLMN has one)
    gamma: float = 0.95          # usage decay [FLMN eq 4]
    mann_add: str = "separate"   # MANN add vector: 'separate' head or the 'key' itself
    cosine_eps: str = "product"  # where the cosine's epsilon goes: 'product' or 'inside'

    def __post_init__(self):
        if self.model not in MEMORIES:
            raise ValueError(f"model must be one of {sorted(MEMORIES)}, got {self.model!r}")
        if self.mann_add not in ("separate", "key"):
            raise ValueError(f"mann_add must be 'separate' or 'key', got {self.mann_add!r}")
        for name in ("input_size", "n_classes", "hidden", "width", "reads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.model == "flmn" and self.reads != 1:
            raise ValueError("FLMN has a single read head: reads must be 1")
        if self.cosine_eps not in COSINE_EPS_PLACEMENTS:
            raise ValueError(f"cosine_eps must be one of {COSINE_EPS_PLACEMENTS}, "
                             f"got {self.cosine_eps!r}")
        if self.n_slots < self.reads:
            raise ValueError(f"need at least as many slots ({self.n_slots}) as heads ({self.reads})")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")

    @property
    def n_slots(self):
        return DEFAULT_SLOTS[self.model] if self.slots is None else self.slots

    @property
    def memory(self):
        """The module with this model's memory step (flmn or mann)."""
        return MEMORIES[self.model]


class State(NamedTuple):
    """Recurrent state after step t; a gradient of the state has the same type."""
    h: Any      # (E, H) controller output; E = B episodes (prod(lead) B for a stack)
    c: Any      # (E, H) LSTM cell
    r: Any      # (E, R W) what the memory returned
    mem: Any    # FLMNMemory or MANNMemory


def param_shapes(cfg):
    """name -> shape of every parameter, in a fixed order (init draws in this order)."""
    D, C, H = cfg.input_size, cfg.n_classes, cfg.hidden
    RW = cfg.memory.read_size(cfg)
    return {
        "W_lstm": (D + C + RW + H, 4 * H),   # rows: x, onehot(y[t-1]), r[t-1], h[t-1]
        "b_lstm": (4 * H,),                  # gates [i | f | o | g]
        "W_head": (H, cfg.memory.head_size(cfg)),
        "b_head": (cfg.memory.head_size(cfg),),
        "W_out": (H + RW, C),                # rows: h[t], r[t]
        "b_out": (C,),
    }


def init_params(cfg, seed, xp, dtype="float32"):
    """Glorot-uniform weights from a seeded host Generator, zero biases but the forget gate's
    (1), cast to `dtype` and moved to `xp` once       [docs/model.md#controller-and-output-layer]."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 2:
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            value = rng.uniform(-limit, limit, size=shape)
        else:
            value = np.zeros(shape)
        if name == "b_lstm":
            value[cfg.hidden:2 * cfg.hidden] = 1.0                       # forget gate
        params[name] = xp.asarray(value.astype(dtype))
    return params


def stack_params(params_list):
    """G models' params  ->  one stack, every array with the leading model axis (G, ...)."""
    xp = array_namespace(params_list[0]["b_out"])
    return {k: xp.stack([p[k] for p in params_list]) for k in params_list[0]}


def model_params(params, s):
    """Model s of a stack: its params as one model's, copies (a checkpoint of its own)."""
    xp = array_namespace(params["b_out"])
    return {k: xp.asarray(v[s, ...], copy=True) for k, v in params.items()}


def model_shape(params):
    """The leading model shape `lead` of params: () for one model, (G,) for a stack."""
    return tuple(params["b_out"].shape[:-1])


def initial_state(cfg, batch_size, xp, dtype):
    """h = c = 0, r = 0 and the model's initial memory             [docs/model.md#initial-state].
    batch_size is the number of episodes E (all models of a stack together)."""
    H, RW = cfg.hidden, cfg.memory.read_size(cfg)
    return State(h=xp.zeros((batch_size, H), dtype=dtype), c=xp.zeros((batch_size, H), dtype=dtype),
                 r=xp.zeros((batch_size, RW), dtype=dtype),
                 mem=cfg.memory.initial_memory(cfg, batch_size, xp, dtype))


def zero_dstate(state, cfg):
    """The gradient reaching the state after the last step: zero."""
    xp = array_namespace(state.h)
    return State(h=xp.zeros_like(state.h), c=xp.zeros_like(state.c), r=xp.zeros_like(state.r),
                 mem=cfg.memory.zero_dmemory(state.mem))


def _split_W_lstm(params, cfg):
    """W_lstm = [W_in; W_rec]: rows for (x, onehot(y[t-1])) and rows for (r[t-1], h[t-1])."""
    n_in = cfg.input_size + cfg.n_classes
    return params["W_lstm"][..., :n_in, :], params["W_lstm"][..., n_in:, :]


class CoreCache(NamedTuple):
    """What core_step_backward needs from core_step_forward."""
    rh_prev: Any      # (E, RW + H) [r[t-1]; h[t-1]], also the caller's dW_rec input
    lstm: Any         # the LSTM cell's cache
    mem: Any          # the memory step's cache


def core_step_forward(z_in, state_prev, params, W_rec, cfg):
    """The recurrent part of step t. z_in (E, 4H): the gates' input part, bias included.
    ->  state (after step t), cache (CoreCache)."""
    xp = array_namespace(z_in)
    rh_prev = xp.concat([state_prev.r, state_prev.h], axis=-1)         # (E, RW + H)
    h, c, lstm_cache = lstm_cell_forward(z_in + per_model_matmul(rh_prev, W_rec), state_prev.c)
    heads = per_model_matmul(h, params["W_head"], params["b_head"])
    r, mem, mem_cache = cfg.memory.memory_step_forward(heads, state_prev.mem, cfg)
    return State(h=h, c=c, r=r, mem=mem), CoreCache(rh_prev, lstm_cache, mem_cache)


def core_step_backward(dstate, cache, W_head_T, W_rec_T, cfg):
    """Backward of the recurrent part of step t (docs/derivations.md#the-reverse-loop).

    Inputs:
        dstate  State of everything reaching the state after step t: h, c (E, H), r (E, RW),
                mem (the memory's gradient type)
        cache   CoreCache from core_step_forward
        W_head_T, W_rec_T  the transposed weights (ops.transposed, made once per episode)
    Returns:
        dz (E, 4H), dheads (E, head_size), dstate_prev (State, same shapes, for step t-1)
    Weight gradients are left to the caller: dW_rec += rh_prev^T dz,  dW_head += h^T dheads.
    """
    dheads, dmem_prev = cfg.memory.memory_step_backward(dstate.r, dstate.mem, cache.mem)
    dh = dstate.h + per_model_matmul(dheads, W_head_T)
    dz, dc_prev = lstm_cell_backward(dh, dstate.c, cache.lstm)
    drh_prev = per_model_matmul(dz, W_rec_T)                           # (E, RW + H)
    RW = dstate.r.shape[-1]
    dstate_prev = State(h=drh_prev[:, RW:], c=dc_prev, r=drh_prev[:, :RW], mem=dmem_prev)
    return dz, dheads, dstate_prev


class EpisodeCache(NamedTuple):
    """What episode_backward needs from episode_forward."""
    u: Any             # (*lead, T B, D + C) [x[t]; onehot(y[t-1])], model-major
    hr: Any            # (*lead, T B, H + RW) [h[t]; r[t]], model-major
    step_caches: Any   # T CoreCaches
    state: Any         # the State after the last step
    params: Any
    cfg: Any


def episode_forward(params, x, y, cfg):
    """x (*lead, B, T, D) float, y (*lead, B, T) int labels  ->  logits (*lead, B, T, C), cache.

    Step t sees x[t] and onehot(y[t-1]) (zeros at the first step)               [FLMN §3].
    The loop index is the paper's step t minus 1. lead = model_shape(params). At the 'step'
    level (levels.py): fused_episode.episode_forward, the same numbers in 8 launches per
    time step, for one model or a stack alike.
    """
    if levels.step(x) and step_kernels.supported(cfg):
        return fused_episode.episode_forward(params, *_split_W_lstm(params, cfg), x, y, cfg)
    xp = array_namespace(x)
    lead = model_shape(params)
    B, T = x.shape[-3], x.shape[-2]
    W_in, W_rec = _split_W_lstm(params, cfg)
    u = xp.concat([x, previous_label_onehot(y, cfg.n_classes, x.dtype)], axis=-1)
    u = rows_of_episodes(u, lead)                                       # (*lead, T B, D + C)
    z_in = xp.matmul(u, W_in) + params["b_lstm"][..., None, :]        # (*lead, T B, 4H): all T

    state = initial_state(cfg, math.prod(lead) * B, xp, x.dtype)
    step_caches, hs, rs = [], [], []
    for z_in_t in xp.unstack(time_major(z_in, T)):                     # T x (E, 4H)
        state, step_cache = core_step_forward(z_in_t, state, params, W_rec, cfg)
        step_caches.append(step_cache)
        hs.append(state.h)
        rs.append(state.r)
    hr = model_major(xp.concat([xp.stack(hs), xp.stack(rs)], axis=-1), lead)  # (*lead, T B, H + RW)
    logits = xp.matmul(hr, params["W_out"]) + params["b_out"][..., None, :]   # (*lead, T B, C)
    return episodes_of_rows(logits, lead, B), EpisodeCache(u, hr, step_caches, state, params, cfg)


def episode_backward(dlogits, cache):
    """BPTT over the episode (docs/derivations.md#bptt), each model of a stack on its own.

    Inputs:  dlogits (*lead, B, T, C), cache from episode_forward
    Returns: grads, a dict with exactly the params' keys and shapes
    """
    if isinstance(cache, fused_episode.EpisodeCache):
        return fused_episode.episode_backward(dlogits, cache)
    u, hr, step_caches, state_T, params, cfg = cache
    xp = array_namespace(dlogits)
    lead, T, H = model_shape(params), len(step_caches), cfg.hidden
    _, W_rec = _split_W_lstm(params, cfg)

    dlogits = rows_of_episodes(dlogits, lead)                           # (*lead, T B, C)
    grads = {"W_out": xp.matmul(hr.mT, dlogits), "b_out": xp.sum(dlogits, axis=-2)}
    dh_out = xp.unstack(time_major(xp.matmul(dlogits, params["W_out"][..., :H, :].mT), T))
    dr_out = xp.unstack(time_major(xp.matmul(dlogits, params["W_out"][..., H:, :].mT), T))
    W_head_T, W_rec_T = transposed(params["W_head"]), transposed(W_rec)

    dstate = zero_dstate(state_T, cfg)
    dzs, dheads_all = [None] * T, [None] * T
    for t in reversed(range(T)):
        dstate = dstate._replace(h=dstate.h + dh_out[t], r=dstate.r + dr_out[t])
        dzs[t], dheads_all[t], dstate = core_step_backward(dstate, step_caches[t], W_head_T,
                                                           W_rec_T, cfg)

    dz = model_major(xp.stack(dzs), lead)                               # (*lead, T B, 4H)
    dheads = model_major(xp.stack(dheads_all), lead)                    # (*lead, T B, n_head)
    rh_prev = model_major(xp.stack([c.rh_prev for c in step_caches]), lead)
    grads["W_lstm"] = xp.matmul(xp.concat([u, rh_prev], axis=-1).mT, dz)
    grads["b_lstm"] = xp.sum(dz, axis=-2)
    grads["W_head"] = xp.matmul(hr[..., :H].mT, dheads)
    grads["b_head"] = xp.sum(dheads, axis=-2)
    return {name: grads[name] for name in params}


def loss_and_grads(params, x, y, cfg):
    """Mean softmax cross-entropy over B and T, one per model (lead), the logits
    (*lead, B, T, C) and the gradients of each model's own loss."""
    logits, cache = episode_forward(params, x, y, cfg)
    loss, ce_cache = cross_entropy_forward(logits, y)
    grads = episode_backward(cross_entropy_backward(1.0, ce_cache), cache)
    return loss, logits, grads


def forward(params, x, y, cfg):
    """Loss and logits without the backward pass (evaluation)."""
    logits, _ = episode_forward(params, x, y, cfg)
    loss, _ = cross_entropy_forward(logits, y)
    return loss, logits


# ---------------------------------------------------------------------------------------------
# One whole step at a time, every product inside the step: the plain form of the model, used to
# test that the hoisted episode code above computes the same thing (tests/test_models.py).

class StepCache(NamedTuple):
    """What step_backward needs from step_forward."""
    u_t: Any      # (B, D + C) [x[t]; onehot(y[t-1])]
    hr_t: Any     # (B, H + RW) [h[t]; r[t]]
    core: Any     # CoreCache


def step_forward(params, x_t, y_prev_t, state_prev, cfg):
    """x_t (B, D), y_prev_t (B, C) one-hot  ->  logits_t (B, C), state, cache (one model)."""
    xp = array_namespace(x_t)
    W_in, W_rec = _split_W_lstm(params, cfg)
    u_t = xp.concat([x_t, y_prev_t], axis=-1)
    state, core_cache = core_step_forward(xp.matmul(u_t, W_in) + params["b_lstm"], state_prev,
                                          params, W_rec, cfg)
    hr_t = xp.concat([state.h, state.r], axis=-1)
    logits_t = xp.matmul(hr_t, params["W_out"]) + params["b_out"]
    return logits_t, state, StepCache(u_t, hr_t, core_cache)


def step_backward(dlogits_t, dstate, cache, params, grads, cfg):
    """Adds this step's weight gradients into `grads` (in place).

    Inputs:  dlogits_t (B, C); dstate (State) from step t+1; cache from step_forward
    Returns: dstate_prev (State) for step t-1
    """
    u_t, hr_t, core_cache = cache
    xp = array_namespace(dlogits_t)
    H = cfg.hidden
    _, W_rec = _split_W_lstm(params, cfg)
    grads["W_out"] += xp.matmul(hr_t.mT, dlogits_t)
    grads["b_out"] += xp.sum(dlogits_t, axis=0)
    dhr = xp.matmul(dlogits_t, params["W_out"].mT)
    dstate = dstate._replace(h=dstate.h + dhr[:, :H], r=dstate.r + dhr[:, H:])
    dz, dheads, dstate_prev = core_step_backward(dstate, core_cache, params["W_head"].mT,
                                                 W_rec.mT, cfg)
    grads["W_lstm"] += xp.matmul(xp.concat([u_t, core_cache.rh_prev], axis=-1).mT, dz)
    grads["b_lstm"] += xp.sum(dz, axis=0)
    grads["W_head"] += xp.matmul(hr_t[:, :H].mT, dheads)
    grads["b_head"] += xp.sum(dheads, axis=0)
    return dstate_prev
