"""Finite-difference check of the hand-derived gradients of a whole episode.

    python -m flmn_np.gradcheck --model {flmn,mann} [--reads R] [--backend numpy]

Builds a tiny random episode in float64, compares every parameter's analytic gradient with
centred differences (h = 1e-6), element by element, and prints the norm ratio
|a - n| / (|a| + |n|) per parameter. Exits 1 if any exceeds the tolerance.

The least-used selection (argmin of the usage) is piecewise constant: a difference is only
valid if +-h leaves every step's choice unchanged, so each evaluation also records the chosen
slots and the check fails loudly if a perturbation changed them.
"""
import argparse
import sys

import numpy as np

from .core.backend import BACKENDS, asarray, get_xp, to_numpy
from .core.models import (ModelConfig, forward, init_params, initial_state, loss_and_grads, param_shapes,
                          step_forward)
from .core.ops import previous_label_onehot
from .cli import float_in, int_at_least, run_command
from .errors import FlmnError

TINY = dict(input_size=4, n_classes=3, hidden=5, width=3)


def rel_error(a, n, tiny=1e-30):
    """Norm ratio |a - n| / max(tiny, |a| + |n|)."""
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(tiny, np.linalg.norm(a) + np.linalg.norm(n)))


def tiny_episode(cfg, seed=0, batch_size=2, steps=8):
    """Host float64 params, inputs and labels for a check (params scaled up x2 so gates and
    addressing are far from their linear regime)."""
    rng = np.random.default_rng(seed + 1000)
    params = {k: 2.0 * v for k, v in init_params(cfg, seed, np, "float64").items()}
    x = rng.random((batch_size, steps, cfg.input_size))
    y = rng.integers(0, cfg.n_classes, size=(batch_size, steps))
    return params, x, y


def least_used_trace(params, x, y, cfg):
    """The slots chosen as least used at every step, (T, B, R) ints: must not move under +-h."""
    xp = params["W_lstm"].__array_namespace__()
    B, T, _ = x.shape
    y_prev = previous_label_onehot(y, cfg.n_classes, x.dtype)
    state = initial_state(cfg, B, xp, x.dtype)
    trace = []
    for t in range(T):
        _, state, _ = step_forward(params, x[:, t, :], y_prev[:, t, :], state, cfg)
        trace.append(to_numpy(xp.argmax(state.mem.w_lu, axis=-1)))
    return np.stack(trace)


def check_episode(cfg, xp, seed=0, batch_size=2, steps=8, h=1e-6):
    """Compare analytic and centred-difference gradients of the mean cross-entropy for every
    parameter element.  ->  {name: rel_error}; raises RuntimeError if a perturbation changed
    a least-used choice (the difference would be meaningless)."""
    params_np, x_np, y_np = tiny_episode(cfg, seed, batch_size, steps)
    x, y = asarray(x_np, xp), asarray(y_np, xp)

    def on_xp(p):
        return {k: asarray(v, xp) for k, v in p.items()}

    _, _, grads = loss_and_grads(on_xp(params_np), x, y, cfg)
    trace = least_used_trace(on_xp(params_np), x, y, cfg)
    errors = {}
    for name, value in params_np.items():
        numeric = np.zeros_like(value)
        flat = value.reshape(-1)   # a view: perturb in place and restore
        for i in range(flat.size):
            old = flat[i]
            losses = []
            for step in (h, -h):
                flat[i] = old + step
                p = on_xp(params_np)
                if not np.array_equal(least_used_trace(p, x, y, cfg), trace):
                    raise RuntimeError(f"{name}[{i}] +-{h} changed a least-used choice; "
                                       "pick another seed (usages too close)")
                losses.append(float(to_numpy(forward(p, x, y, cfg)[0])))
            flat[i] = old
            numeric.reshape(-1)[i] = (losses[0] - losses[1]) / (2 * h)
        errors[name] = rel_error(to_numpy(grads[name]), numeric)
    return errors


def check_directions(cfg, xp, seed=0, batch_size=2, steps=8, h=1e-6):
    """Chainer's check: per parameter one random unit direction d, comparing sum(grad * d) with
    (L(p + h d) - L(p - h d)) / 2h.  ->  {name: rel_error}.  Two evaluations per parameter, so
    it is cheap on any backend."""
    params_np, x_np, y_np = tiny_episode(cfg, seed, batch_size, steps)
    x, y = asarray(x_np, xp), asarray(y_np, xp)
    rng = np.random.default_rng(seed + 7)
    base = {k: asarray(v, xp) for k, v in params_np.items()}
    _, _, grads = loss_and_grads(base, x, y, cfg)
    trace = least_used_trace(base, x, y, cfg)
    errors = {}
    for name, value in params_np.items():
        d = rng.standard_normal(value.shape)
        d /= np.linalg.norm(d)
        losses = []
        for s in (h, -h):
            p = {**base, name: asarray(value + s * d, xp)}
            if not np.array_equal(least_used_trace(p, x, y, cfg), trace):
                raise RuntimeError(f"{name} +-{h} along a direction changed a least-used choice")
            losses.append(float(to_numpy(forward(p, x, y, cfg)[0])))
        errors[name] = rel_error(np.sum(to_numpy(grads[name]) * d), (losses[0] - losses[1]) / (2 * h))
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.gradcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["flmn", "mann"], default="flmn")
    parser.add_argument("--reads", type=int_at_least(1), default=1, help="MANN read/write heads R")
    parser.add_argument("--mann-add", choices=["separate", "key"], default="separate")
    parser.add_argument("--slots", type=int_at_least(1), default=6,
                        help="memory slots N of the tiny model")
    parser.add_argument("--backend", choices=[b for b in BACKENDS if b != "auto"], default="numpy")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--tol", type=float_in(0.0, float("inf"), low_open=True), default=1e-6,
                        help="largest accepted norm ratio")
    args = parser.parse_args(argv)
    return run_command("gradcheck", check_and_print, args)


def check_and_print(args):
    try:
        xp = get_xp(args.backend)
        cfg = ModelConfig(model=args.model, reads=args.reads, slots=args.slots,
                          mann_add=args.mann_add, **TINY)
        errors = check_episode(cfg, xp, seed=args.seed)
    except FlmnError:
        raise
    except (ValueError, RuntimeError) as e:  # a model the flags cannot make, a changed choice
        raise FlmnError(str(e)) from None
    print(f"{args.model} (R={cfg.reads}, N={cfg.n_slots}, W={cfg.width}, H={cfg.hidden}, "
          f"C={cfg.n_classes}, D={cfg.input_size}), B=2, T=8, float64, {args.backend}, h=1e-6")
    print(f"{'parameter':<10} {'shape':>10} {'|a-n|/(|a|+|n|)':>18}")
    shapes = param_shapes(cfg)
    for name, err in errors.items():
        flag = "" if err <= args.tol else "   FAIL"
        print(f"{name:<10} {str(shapes[name]):>10} {err:18.2e}{flag}")
    worst = max(errors.values())
    print(f"worst {worst:.2e}, tolerance {args.tol:.0e}: {'ok' if worst <= args.tol else 'FAILED'}")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
