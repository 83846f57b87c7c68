"""An independent PyTorch (eager, autograd) implementation of the FLMN episode of docs/model.md, kept
outside the package (flmn-np itself uses no deep-learning framework). Two uses:

  --check  its autograd gradients against flmn_np's hand-derived ones (float64, tiny sizes)
  --bench  the time of one training step (forward, backward, Adam) at the real sizes, next to
           `python -m flmn_np.bench` measured in the same run on the same machine
  --compile  also the step under torch.compile (inductor), its compile time reported apart
  --json     one JSON line of the torch timings (benchmarks/cpu_level.py reads it)

    python -m pip install torch==2.13.0      # CPU build; not a requirement of flmn-np
    python benchmarks/torch_flmn.py --check --bench
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError:
    print("torch_flmn.py: needs PyTorch (pip install torch); the flmn_np side alone is "
          "`python -m flmn_np.bench`", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flmn_np.bench import bench as flmn_np_bench                     # noqa: E402
from flmn_np.core.models import ModelConfig, init_params, loss_and_grads  # noqa: E402


def cosine_denominator(k, M, placement, eps=1e-8):
    """The cosine's denominator for k (B, W), M (B, N, W), by the epsilon's placement:
    'product' |k| |M| + eps (the true cosine, the default), 'inside' sqrt(k.k + eps) sqrt(M.M + eps)."""
    if placement == "product":
        return torch.sqrt((k * k).sum(-1, keepdim=True)) * torch.sqrt((M * M).sum(-1)) + eps
    return torch.sqrt((k * k).sum(-1, keepdim=True) + eps) * torch.sqrt((M * M).sum(-1) + eps)


def flmn_loss(p, x, y, cfg):
    """Mean cross-entropy of FLMN over an episode batch, written straight from docs/model.md."""
    B, T, D = x.shape
    H, N, W, C = cfg.hidden, cfg.n_slots, cfg.width, cfg.n_classes
    y_prev = torch.zeros(B, T, C, dtype=x.dtype)
    y_prev[:, 1:] = torch.nn.functional.one_hot(y[:, :-1], C).to(x.dtype)
    W_in, W_rec = p["W_lstm"][:D + C], p["W_lstm"][D + C:]
    z_in = torch.cat([x, y_prev], -1) @ W_in + p["b_lstm"]
    h = c = torch.zeros(B, H, dtype=x.dtype)
    r = torch.zeros(B, W, dtype=x.dtype)
    M_f = M_l = torch.full((B, N, W), 1e-6, dtype=x.dtype)
    w_r = w_wf_prev = w_u = torch.zeros(B, N, dtype=x.dtype)
    w_lu = torch.nn.functional.one_hot(torch.zeros(B, dtype=torch.long), N).to(x.dtype)
    logits = []
    for t in range(T):
        z = z_in[:, t] + torch.cat([r, h], -1) @ W_rec
        i, f, o = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]), torch.sigmoid(z[:, 2 * H:3 * H])
        c = f * c + i * torch.tanh(z[:, 3 * H:])
        h = o * torch.tanh(c)
        heads = h @ p["W_head"] + p["b_head"]
        k, a_f, a_l = (torch.tanh(heads[:, j * W:(j + 1) * W]) for j in range(3))
        g = torch.sigmoid(heads[:, 3 * W:])
        w_wf = g * w_r + (1 - g) * w_lu                                              # eq 6
        M_f = M_f * (1 - w_lu)[:, :, None] + w_wf[:, :, None] * a_f[:, None, :]      # eq 7-8
        M_l = M_l + w_wf_prev[:, :, None] * a_l[:, None, :]                          # eq 9-10
        K = (M_f @ k[:, :, None])[:, :, 0] / cosine_denominator(k, M_f, cfg.cosine_eps)
        w_r = torch.softmax(K, -1)                                                   # eq 1-2
        r = (w_r[:, None, :] @ M_l)[:, 0]                                            # eq 3
        with torch.no_grad():                                                        # eq 4-5
            w_u = 0.95 * w_u + w_wf + w_r
            w_lu = torch.nn.functional.one_hot(torch.argmin(w_u, -1), N).to(x.dtype)
        w_wf_prev = w_wf
        logits.append(torch.cat([h, r], -1) @ p["W_out"] + p["b_out"])
    logits = torch.stack(logits, 1)
    return torch.nn.functional.cross_entropy(logits.reshape(B * T, C), y.reshape(B * T))


def check(seed=0, cosine_eps="product"):
    cfg = ModelConfig(model="flmn", input_size=12, n_classes=3, hidden=7, slots=6, width=4,
                      cosine_eps=cosine_eps)
    params = init_params(cfg, seed, np, "float64")
    rng = np.random.default_rng(seed)
    x, y = rng.random((3, 15, cfg.input_size)), rng.integers(0, 3, (3, 15))
    loss, _, grads = loss_and_grads(params, x, y, cfg)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    t_loss = flmn_loss(p, torch.tensor(x), torch.tensor(y), cfg)
    t_loss.backward()
    print(f"cosine eps {cosine_eps}: loss flmn_np {float(loss):.12f}, torch {t_loss.item():.12f}")
    worst = 0.0
    for k in params:
        a, b = grads[k], p[k].grad.numpy()
        err = np.linalg.norm(a - b) / max(1e-30, np.linalg.norm(a) + np.linalg.norm(b))
        worst = max(worst, err)
        print(f"{k:<8} |a-t|/(|a|+|t|) = {err:.2e}")
    print(f"worst {worst:.2e}: {'ok' if worst < 1e-10 else 'MISMATCH'}")
    return worst < 1e-10


def bench_torch(batch_size=16, repeats=20, warmup=3, compiled=False):
    """Median ms of one training step; compiled: the loss under torch.compile, and the seconds
    of its first call (the compile) as well -> (ms, compile_s)."""
    cfg = ModelConfig(model="flmn")
    p = {k: torch.tensor(v, requires_grad=True) for k, v in init_params(cfg, 0, np).items()}
    opt = torch.optim.Adam(p.values(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.tensor((rng.random((batch_size, 50, 400)) < 0.1).astype(np.float32))
    y = torch.tensor(rng.integers(0, 5, (batch_size, 50)))
    loss_fn = torch.compile(flmn_loss, dynamic=False) if compiled else flmn_loss
    compile_s = None
    if compiled:
        start = time.perf_counter()
        loss_fn(p, x, y, cfg).backward()
        compile_s = time.perf_counter() - start
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(p, x, y, cfg).backward()
        opt.step()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16])
    args = parser.parse_args()
    ok = True
    if args.check:
        ok = all([check(cosine_eps=placement) for placement in ("product", "inside")])
    if args.bench and args.json:
        torch.set_num_threads(args.threads)
        rows = []
        for B in args.batch_size:
            ms, _ = bench_torch(B)
            rows.append({"impl": "torch eager", "batch_size": B, "ms_per_step": round(ms, 2)})
            if args.compile:
                ms, compile_s = bench_torch(B, compiled=True)
                rows.append({"impl": "torch.compile", "batch_size": B,
                             "ms_per_step": round(ms, 2), "compile_s": round(compile_s, 1)})
        print(json.dumps({"torch": torch.__version__, "threads": args.threads, "rows": rows}))
    elif args.bench:
        torch.set_num_threads(args.threads)
        ms, _ = bench_torch()
        ours = flmn_np_bench("flmn", 16, "numpy")
        print(f"torch {torch.__version__} eager, {args.threads} threads: {ms:.1f} ms/step; "
              f"flmn_np numpy: {ours['ms_per_step']:.1f} ms/step (FLMN, B=16, T=50, H=200, Adam)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
