"""Optimizers on the flat params dict, and global-norm gradient clipping.

Each optimizer keeps one state array per parameter under the parameter's key, updates
the params in place, and exposes its state as a flat dict for checkpoints.

A stack of models (models.py): params carry the leading model shape `lead` ((G,) for G models,
() for one), and norms, clipping, learning rates and optimizer states are per model. Model s's
state is an ordinary one-model state (model_state_dict); G of them make a stack's
(stack_state_dicts).
"""
import math

from . import kernels, levels
from .backend import array_namespace


def global_norm(grads, lead=()):
    """sqrt(sum over all gradient elements of g^2) per model: shape lead (0-d for one model),
    an array (no host sync)."""
    xp = array_namespace(next(iter(grads.values())))
    L = len(lead)
    return xp.sqrt(sum(xp.sum(g * g, axis=tuple(range(L, g.ndim))) for g in grads.values()))


def clip_by_global_norm(grads, max_norm, lead=()):
    """g <- g * min(1, max_norm / |g|) for all g of a model together; max_norm None or 0: no
    clipping.  ->  (grads, each model's global norm before clipping, shape lead)."""
    norm = global_norm(grads, lead)
    if not max_norm:
        return grads, norm
    xp = array_namespace(norm)
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)                 # (*lead)
    return {k: g * xp.reshape(scale, (*lead, *(1,) * (g.ndim - len(lead))))
            for k, g in grads.items()}, norm


def model_state_dict(state, s):
    """Model s's part of a stack's optimizer state: an ordinary one-model state dict."""
    return {k: v if k == "t" else v[s, ...] for k, v in state.items()}


def stack_state_dicts(states):
    """G one-model optimizer states  ->  the stack's state (arrays stacked on a model axis).
    A stack steps all its models together, so their Adam step counts t must agree."""
    if "t" in states[0] and len({int(st["t"]) for st in states}) != 1:
        raise ValueError("models of a stack must have taken the same number of steps, got t = "
                         + ", ".join(str(int(st["t"])) for st in states))
    xp = array_namespace(next(v for k, v in states[0].items() if k != "t"))
    return {k: v if k == "t" else xp.stack([st[k] for st in states]) for k, v in states[0].items()}


class Adam:
    """Adam (Kingma & Ba 2015):

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

    m and v live in one flat buffer each, over all parameters in the params' key order: a step
    is a dozen array operations on the whole buffer plus three per parameter (its slice of the
    update, reshaped and subtracted), instead of a dozen per parameter. The params stay separate
    arrays, updated in place. state_dict exposes m and v per key, as views of the buffers.
    For a stack (lead = (G,)) the buffers are (G, n), and lr may be G numbers, one per model.
    At the 'step' level (levels.py) the params move into a flat buffer too, each
    params[k] becoming a view of it (same values and shape), and a step is one kernel
    (kernels.ADAM) over the three buffers, after one concat of the grads.
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, lead=()):
        first = next(iter(params.values()))
        xp = array_namespace(first)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.lead, self.t = tuple(lead), 0
        L = len(self.lead)
        self.shapes = {k: tuple(p.shape[L:]) for k, p in params.items()}
        self.offsets, n = {}, 0
        for k, shape in self.shapes.items():
            size = math.prod(shape)
            self.offsets[k] = (n, n + size)
            n += size
        self.m = xp.zeros((*self.lead, n), dtype=first.dtype)
        self.v = xp.zeros((*self.lead, n), dtype=first.dtype)
        # one lr per model: (*lead, 1) in float64, moved once; lr_t is rounded to the params'
        # dtype after its float64 product, as a Python number is when one model steps alone
        self._lr = (xp.reshape(xp.asarray(lr, dtype=xp.float64), (*self.lead, 1))
                    if isinstance(lr, (list, tuple)) else lr)
        self.p = self.p_views = None      # the 'step' level's flat params and their views

    def _flat(self, arrays):
        """Concatenate per-key arrays, in the params' key order, into one flat (*lead, n)."""
        xp = array_namespace(next(iter(arrays.values())))
        return xp.concat([xp.reshape(arrays[k], (*self.lead, -1)) for k in self.shapes], axis=-1)

    def _per_key(self, flat):
        """{key: view of the key's slice of `flat`, in the parameter's shape}."""
        xp = array_namespace(flat)
        return {k: xp.reshape(flat[..., a:b], (*self.lead, *self.shapes[k]))
                for k, (a, b) in self.offsets.items()}

    def step(self, params, grads):
        xp = array_namespace(self.m)
        self.t += 1
        correction = math.sqrt(1.0 - self.beta2 ** self.t) / (1.0 - self.beta1 ** self.t)
        lr_t = self._lr * correction
        if not isinstance(lr_t, float):
            lr_t = xp.astype(lr_t, self.m.dtype)
        g = self._flat(grads)
        if levels.step(self.m):
            kernels.adam_update(self._flat_params(params), self.m, self.v, g, lr_t, self.beta1,
                                self.beta2, self.eps)
            return
        self.m += (1.0 - self.beta1) * (g - self.m)     # in place: b1 m + (1 - b1) g
        self.v += (1.0 - self.beta2) * (g * g - self.v)
        update = lr_t * self.m / (xp.sqrt(self.v) + self.eps)
        for k, u in self._per_key(update).items():
            params[k] -= u

    def _flat_params(self, params):
        """The flat params buffer, params[k] views of it: (re)made when a params[k] is not the
        view handed out (the first step, or an array put there since)."""
        if self.p is None or any(params[k] is not self.p_views[k] for k in self.shapes):
            self.p = self._flat(params)
            self.p_views = self._per_key(self.p)
            params.update(self.p_views)
        return self.p

    def state_dict(self):
        return {"t": self.t, **{f"m/{k}": v for k, v in self._per_key(self.m).items()},
                **{f"v/{k}": v for k, v in self._per_key(self.v).items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.m = self._flat({k: state[f"m/{k}"] for k in self.shapes})
        self.v = self._flat({k: state[f"v/{k}"] for k in self.shapes})


class RMSProp:
    """RMSProp with momentum, Santoro et al.'s settings (TensorFlow's form):

        ms = decay ms + (1 - decay) g^2;   mom = momentum mom + lr g / sqrt(ms + eps);   p -= mom
    """

    def __init__(self, params, lr=1e-4, decay=0.95, momentum=0.9, eps=1e-10, lead=()):
        """lead: the params' model shape; every update is elementwise, so a stack needs nothing
        more (one lr for all its models)."""
        if isinstance(lr, (list, tuple)):
            raise ValueError("RMSProp takes one learning rate for all models of a stack")
        xp = array_namespace(next(iter(params.values())))
        self.lr, self.decay, self.momentum, self.eps = lr, decay, momentum, eps
        self.ms = {k: xp.zeros_like(p) for k, p in params.items()}
        self.mom = {k: xp.zeros_like(p) for k, p in params.items()}

    def step(self, params, grads):
        xp = array_namespace(next(iter(params.values())))
        for k, g in grads.items():
            self.ms[k] = self.decay * self.ms[k] + (1.0 - self.decay) * (g * g)
            self.mom[k] = self.momentum * self.mom[k] + self.lr * g / xp.sqrt(self.ms[k] + self.eps)
            params[k] -= self.mom[k]

    def state_dict(self):
        return {**{f"ms/{k}": v for k, v in self.ms.items()},
                **{f"mom/{k}": v for k, v in self.mom.items()}}

    def load_state_dict(self, state):
        for k in self.ms:
            self.ms[k], self.mom[k] = state[f"ms/{k}"], state[f"mom/{k}"]


OPTIMIZERS = {"adam": (Adam, 1e-3), "rmsprop": (RMSProp, 1e-4)}


def make_optimizer(name, params, lr=None, lead=()):
    """'adam' (default lr 1e-3) or 'rmsprop' (default lr 1e-4); lead: the params' model shape."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    cls, default_lr = OPTIMIZERS[name]
    return cls(params, lr=default_lr if lr is None else lr, lead=lead)
