"""Each model's memory step as one CUDA kernel, forward and backward: the 'step' level.

At B = 16 a GPU step is bound by launches: the elementwise level (kernels.py) still launches ~40
kernels per memory step, forward and backward, around its products and sums. Here one kernel
does all of a memory step, forward (interface activations with b_head added, write weights,
writes, cosine addressing with its products and norms, softmax, read, usage, least-used slots)
or backward (its gradients, the incoming dr and dmem added, the interface derivative applied).

One thread per episode: thread e loops over the N slots and the W columns of episode e and
computes what the xp code it replaces computes (flmn.py, mann.py and the ops they call). Chosen
because (1) at B = 16 the step is bound by launches, not arithmetic: 16 episodes of N W = 2,560
values are little work for one launch however it is split; (2) a thread that owns its episode
needs no cooperation (no shared memory, no __syncthreads), so the CPU check runs this very
source as a plain loop over the thread index (tests/kernel_harness.py), where block-level
cooperation would need an emulation of its own. The price: each thread's work is serial, a few
passes over its N W values per step (docs/performance.md estimates it). Every leading axis of
the arrays counts as more episodes (E rows), so G stacked models are G B episodes.
Checked against the xp code on the CPU (tests/test_step_kernels.py): float64 within 1e-12 and
float32 within 2e-6 of each output's largest entry.

A kernel is a `RawSpec`: its name, C parameters and body; SOURCE is the one CUDA module that
holds them all (a template over the float type T), as `cupy.RawModule` compiles it. The wrappers
below allocate with `xp` and hand the spec, the number of threads and the arguments to a
launcher: `launch_cupy` on a GPU, tests' `launch_raw_cpp` on the CPU (g++). Every array argument
is a C-contiguous row-major array; the two row-strided ones (r written into the rows of the
recurrent [r | h] buffer, dr read from them) take their row length `ld_*`.
Plain formulas and the order of operations: docs/derivations.md#one-kernel-per-memory-step.
"""
import functools
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from . import levels
from .kernels import PREAMBLE

MAX_HEADS = 8     # MANN heads per kernel call (per-thread arrays); more take the elementwise level
THREADS_PER_BLOCK = 64
OPTIONS = ("-std=c++17",)


class RawSpec(NamedTuple):
    """A kernel of SOURCE: `template <typename T> __global__ void name(params) { body }`."""
    name: str
    params: str
    body: str


HELPERS = """
#define MAX_HEADS %d

// The same loops run in one GPU thread per episode and, built for the CPU (cpu_kernels.py), in
// one core's thread per episode, where a C++ compiler vectorizes them: the hot loops (over a
// slot's W values, over the N slots) are unit-stride, reach memory through a helper's
// __restrict__ pointers (which never overlap) and carry nothing from one iteration to the next
// but their sums. The formulas are the xp code's; the order of some sums is the loops' own
// (add_rows takes four rows at a time, MANN's slot gradient is formed head by head), and a CPU
// build that may reassociate (cpu_kernels.REASSOCIATE_FLAGS) regroups the sums over W and N.

// a . b over W values
template <typename T>
__device__ T row_dot(const T* __restrict__ a, const T* __restrict__ b, int W) {
  T s = 0;
  for (int v = 0; v < W; ++v) s += a[v] * b[v];
  return s;
}

// (a + b) . c over W values: the gradient dr = dr_next + dr_out summed on the way
template <typename T>
__device__ T row_dot_sum(const T* __restrict__ a, const T* __restrict__ b,
                         const T* __restrict__ c, int W) {
  T s = 0;
  for (int v = 0; v < W; ++v) s += (a[v] + b[v]) * c[v];
  return s;
}

// y = tanh(x + b) over n values (ops.interface_forward's tanh part, the bias added)
template <typename T>
__device__ void tanh_sum(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y,
                         int n) {
  for (int c = 0; c < n; ++c) y[c] = tanh(x[c] + b[c]);
}

// [FLMN eq 6] w_w = w_lu_prev + g_w (w_r_prev - w_lu_prev) over N slots (memory.write_weights)
template <typename T>
__device__ void write_weights(T g_w, const T* __restrict__ w_r_prev,
                              const T* __restrict__ w_lu_prev, T* __restrict__ w_w, int N) {
  for (int i = 0; i < N; ++i) w_w[i] = w_lu_prev[i] + g_w * (w_r_prev[i] - w_lu_prev[i]);
}

// [FLMN eq 7-8] one slot's write with erase: M_i = w a + M_prev_i keep, keep = 1 - erase_i
template <typename T>
__device__ void write_row(T w, const T* __restrict__ a, const T* __restrict__ M_prev_i, T keep,
                          T* __restrict__ M_i, int W) {
  for (int v = 0; v < W; ++v) M_i[v] = w * a[v] + M_prev_i[v] * keep;
}

// [FLMN eq 9-10] one slot's write without erase (the label write): M_i = w a + M_prev_i
template <typename T>
__device__ void add_row(T w, const T* __restrict__ a, const T* __restrict__ M_prev_i,
                        T* __restrict__ M_i, int W) {
  for (int v = 0; v < W; ++v) M_i[v] = w * a[v] + M_prev_i[v];
}

// y += sum_i w[i * ws] x_i over the n rows x_i of x (n x W): y += w x, four rows at a time, so
// that the sums in y wait on memory a quarter as often (on a CPU, a store and a load per pass)
template <typename T>
__device__ void add_rows(const T* __restrict__ w, int ws, const T* __restrict__ x, int n, int W,
                         T* __restrict__ y) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const T w0 = w[i * ws], w1 = w[(i + 1) * ws], w2 = w[(i + 2) * ws], w3 = w[(i + 3) * ws];
    const T *x0 = x + i * W, *x1 = x0 + W, *x2 = x1 + W, *x3 = x2 + W;
    for (int v = 0; v < W; ++v) y[v] += (w0 * x0[v] + w1 * x1[v]) + (w2 * x2[v] + w3 * x3[v]);
  }
  for (; i < n; ++i)
    for (int v = 0; v < W; ++v) y[v] += w[i * ws] * x[i * W + v];
}

// [FLMN eq 3] r = w M: r[v] = sum_i w_i M[i][v]
template <typename T>
__device__ void read_memory(const T* __restrict__ w, const T* __restrict__ M, int N, int W,
                            T* __restrict__ r) {
  for (int v = 0; v < W; ++v) r[v] = 0;
  add_rows(w, 1, M, N, W, r);
}

// [FLMN eq 1] for one key and one slot (addressing.cosine_forward) from kM = k . M_i, kk = |k|^2
// and MM = |M_i|^2, each norm plus eps_inside; P = |k| |M_i|; den = P + eps_product;
// K = kM / den. One of the two epsilons is 0 ('product' or 'inside').
template <typename T>
struct Cosine { T P, denom, K; };

template <typename T>
__device__ Cosine<T> cosine(T kM, T kk, T MM, T eps_product) {
  Cosine<T> c;
  c.P = sqrt(kk * MM);
  c.denom = c.P + eps_product;
  c.K = kM / c.denom;
  return c;
}

// x = exp(x) over 8 values: one function, so that every exp of exp_rows runs the same code
#if !defined(__CUDACC__) && !defined(__noinline__)
#define __noinline__ __attribute__((noinline))   // CUDA's qualifier, for a plain C++ compiler
#endif
template <typename T>
__noinline__ __device__ void exp_8(T* __restrict__ x) {
  for (int u = 0; u < 8; ++u) x[u] = exp(x[u]);
}

// x = exp(x) over n values, 8 at a time, the last ones padded into a block of 8: every value
// takes the same code path. On a CPU exp_8 vectorizes (glibc's vector exp) where the tail of a
// plain loop would take the scalar exp, whose last bit differs; equal K (the empty slots') must
// give equal weights, for least_used breaks their tie by index as the xp code does.
template <typename T>
__device__ void exp_rows(T* x, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) exp_8(x + i);
  if (i < n) {
    T block[8];
    for (int u = 0; u < 8; ++u) block[u] = i + u < n ? x[i + u] : (T)0;
    exp_8(block);
    for (int u = 0; i + u < n; ++u) x[i + u] = block[u];
  }
}

// [FLMN eq 2] w^j = softmax_i K^j_i over the N slots of memory M (N x W) for each of the R keys
// k^j (rows of k, R x W): no max subtracted, |K| <= 1 (ops.softmax_bounded_forward). The
// products first (MM: N values of scratch, the caller's w_u, written after; w holds k^j . M_i),
// then the cosines, exps and sums as loops over the slots of their own.
template <typename T>
__device__ void address(const T* __restrict__ k, const T* __restrict__ M, int N, int W, int R,
                        T eps_product, T eps_inside, T* __restrict__ MM, T* __restrict__ w) {
  for (int i = 0; i < N; ++i) {
    MM[i] = row_dot(M + i * W, M + i * W, W) + eps_inside;
    for (int j = 0; j < R; ++j) w[j * N + i] = row_dot(k + j * W, M + i * W, W);
  }
  for (int j = 0; j < R; ++j) {
    const T kk = row_dot(k + j * W, k + j * W, W) + eps_inside;
    for (int i = 0; i < N; ++i) w[j * N + i] = cosine(w[j * N + i], kk, MM[i], eps_product).K;
    exp_rows(w + j * N, N);
    T sum_e = 0;
    for (int i = 0; i < N; ++i) sum_e += w[j * N + i];
    for (int i = 0; i < N; ++i) w[j * N + i] = w[j * N + i] / sum_e;
  }
}

// [FLMN eq 5] one-hots w_lu (R x N) of the R least-used slots of w_u, ascending usage, ties to
// the lowest index: the order of a stable sort (memory.least_used). Head j takes the smallest
// (w_u[i], i) that comes after head j-1's in that order.   # constant in backward
template <typename T>
__device__ void least_used(const T* w_u, int N, int R, T* w_lu) {
  int prev = -1;
  for (int j = 0; j < R; ++j) {
    int best = -1;
    for (int i = 0; i < N; ++i) {
      const bool after_prev = prev < 0 || w_u[i] > w_u[prev] || (w_u[i] == w_u[prev] && i > prev);
      if (after_prev && (best < 0 || w_u[i] < w_u[best])) best = i;
    }
    for (int i = 0; i < N; ++i) w_lu[j * N + i] = i == best ? (T)1 : (T)0;
    prev = best;
  }
}

// The backward of one FLMN slot i over its W values (flmn_step_backward, step 2; the names are
// the kernel's, _i: row i): the addressing's and the two writes' gradients. Adds into dk, da_f,
// da_l; returns dw_wf_i = a_f . dM_f[t]_i and dw_wf_prev_i = a_l . dM_l[t]_i.
template <typename T>
__device__ void flmn_slot_backward(
    T dK_scaled, T E_MM, T keep, T w_r_i, T w_wf_i, T w_wf_prev_i,
    const T* __restrict__ k, const T* __restrict__ a_f, const T* __restrict__ a_l,
    const T* __restrict__ M_f_i, const T* __restrict__ dM_f_i, const T* __restrict__ dM_l_i,
    const T* __restrict__ dr_next, const T* __restrict__ dr_out,
    T* __restrict__ dk, T* __restrict__ da_f, T* __restrict__ da_l,
    T* __restrict__ dM_f_prev_i, T* __restrict__ dM_l_prev_i, int W,
    T& dw_wf_i, T& dw_wf_prev_i) {
  T sum_f = 0, sum_l = 0;
  for (int v = 0; v < W; ++v) {
    dk[v] += dK_scaled * M_f_i[v];
    // dM_f[t]: the addressing's, plus step t+1's feature write
    const T dM_f_t = (dK_scaled * k[v] - E_MM * M_f_i[v]) + dM_f_i[v];
    dM_f_prev_i[v] = dM_f_t * keep;
    sum_f += a_f[v] * dM_f_t;
    da_f[v] += w_wf_i * dM_f_t;
    // dM_l[t]: the read's, plus step t+1's label write
    const T dM_l_t = w_r_i * (dr_next[v] + dr_out[v]) + dM_l_i[v];
    dM_l_prev_i[v] = dM_l_t;
    sum_l += a_l[v] * dM_l_t;
    da_l[v] += w_wf_prev_i * dM_l_t;
  }
  dw_wf_i = sum_f;
  dw_wf_prev_i = sum_l;
}
""" % MAX_HEADS

HELPERS += """
// MANN's write of slot i for R heads: M_i = sum_j w_w^j_i a^j + M_prev_i keep (w_w_i: head
// j's weight at w_w_i[j * N]); one pass for one head, else M_prev_i keep and the heads added.
template <typename T>
__device__ void mann_write_row(const T* w_w_i, int N, const T* a, int R,
                               const T* __restrict__ M_prev_i, T keep, T* __restrict__ M_i,
                               int W) {
  if (R == 1) {
    write_row(w_w_i[0], a, M_prev_i, keep, M_i, W);
    return;
  }
  for (int v = 0; v < W; ++v) M_i[v] = M_prev_i[v] * keep;
  add_rows(w_w_i, N, a, R, W, M_i);
}

// One head's part of MANN's slot backward (mann_step_backward, step 2, the names are the
// kernel's): dM_t += dK^j k^j + w_r^j_i dr^j, the addressing's and the read's gradient of slot
// i; dk^j += dK^j M_i.
template <typename T>
__device__ void mann_head_backward(T dK_scaled, T w_r_i, const T* __restrict__ k,
                                   const T* __restrict__ dr_next, const T* __restrict__ dr_out,
                                   const T* __restrict__ M_i, T* __restrict__ dM_t,
                                   T* __restrict__ dk, int W) {
  for (int v = 0; v < W; ++v) {
    dM_t[v] += dK_scaled * k[v] + w_r_i * (dr_next[v] + dr_out[v]);
    dk[v] += dK_scaled * M_i[v];
  }
}

// One head's write backward for slot i: da^j += w_w^j_i dM_t; returns dw_w^j_i = a^j . dM_t.
template <typename T>
__device__ T mann_head_write_backward(T w_w_i, const T* __restrict__ a,
                                      const T* __restrict__ dM_t, T* __restrict__ da, int W) {
  T dw = 0;
  for (int v = 0; v < W; ++v) {
    dw += a[v] * dM_t[v];
    da[v] += w_w_i * dM_t[v];
  }
  return dw;
}
"""

# flmn.memory_step_forward [FLMN eq 1-10]. heads (E, 3W+1) = h W_head, laid out
# [k | a_f | a_l | alpha]; b_head has one row per bias_every episodes; memories (E, N, W),
# weights (E, N). act receives [tanh(k, a_f, a_l) | sigma(alpha)], r row e of rh at e * ld_r.
FLMN_FORWARD = RawSpec("flmn_step_forward", """
    const T* heads, const T* b_head, int bias_every,
    const T* M_f_prev, const T* M_l_prev, const T* w_r_prev, const T* w_wf_prev,
    const T* w_u_prev, const T* w_lu_prev,
    T* act, T* M_f, T* M_l, T* w_r, T* w_wf, T* w_u, T* w_lu, T* r, int ld_r,
    int E, int N, int W, T gamma, T eps_product, T eps_inside""", """
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;                     // thread e computes episode e, alone
  // every pointer moved to episode e's rows (n_head, N W, N or R N values each), b_head to
  // its model's row (bias_every episodes a model), r to row e of the [r | h] buffer (ld_r apart)
  const int n_head = 3 * W + 1;
  const long long NW = (long long)N * W;
  heads += e * n_head;  b_head += e / bias_every * n_head;  act += e * n_head;  r += e * ld_r;
  M_f_prev += e * NW;  M_l_prev += e * NW;  M_f += e * NW;  M_l += e * NW;
  w_r_prev += e * N;  w_wf_prev += e * N;  w_u_prev += e * N;  w_lu_prev += e * N;
  w_r += e * N;  w_wf += e * N;  w_u += e * N;  w_lu += e * N;

  // k, a_f, a_l = tanh(heads + b_head);  g_w = sigma(alpha)        (ops.interface_forward)
  tanh_sum(heads, b_head, act, 3 * W);
  act[3 * W] = sigma(heads[3 * W] + b_head[3 * W]);
  const T *k = act, *a_f = act + W, *a_l = act + 2 * W;
  const T g_w = act[3 * W];

  write_weights(g_w, w_r_prev, w_lu_prev, w_wf, N);                      // [eq 6]
  for (int i = 0; i < N; ++i) {
    write_row(w_wf[i], a_f, M_f_prev + i * W, (T)1 - w_lu_prev[i], M_f + i * W, W);  // [eq 7-8]
    add_row(w_wf_prev[i], a_l, M_l_prev + i * W, M_l + i * W, W);        // [eq 9-10]
  }
  address(k, M_f, N, W, 1, eps_product, eps_inside, w_u, w_r);           // [eq 1-2]
  read_memory(w_r, M_l, N, W, r);                                        // [eq 3]
  for (int i = 0; i < N; ++i) w_u[i] = gamma * w_u_prev[i] + w_wf[i] + w_r[i];   // [eq 4]
  least_used(w_u, N, 1, w_lu);                                           // [eq 5]
""")

# flmn.memory_step_backward (docs/derivations.md#flmn-step): dr = dr_next + dr_out (the
# controller at t+1, the output layer at t; rows at e * ld_dr), dmem = (dM_f, dM_l, dw_r, dw_wf)
# from step t+1; the cache is act and the memory state after steps t and t-1.
FLMN_BACKWARD = RawSpec("flmn_step_backward", """
    const T* dr_next, const T* dr_out, int ld_dr,
    const T* dM_f, const T* dM_l, const T* dw_r, const T* dw_wf,
    const T* act, const T* M_f, const T* M_l, const T* w_r, const T* w_wf,
    const T* w_r_prev, const T* w_wf_prev, const T* w_lu_prev,
    T* dheads, T* dM_f_prev, T* dM_l_prev, T* dw_r_prev, T* dw_wf_prev,
    int E, int N, int W, T eps_product, T eps_inside, T tiny""", """
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;                     // thread e computes episode e, alone
  // every pointer moved to episode e's rows (n_head, N W, N or R N values each), dr_next and
  // dr_out to row e of their [r | h] buffers (ld_dr apart)
  const int n_head = 3 * W + 1;
  const long long NW = (long long)N * W;
  dr_next += e * ld_dr;  dr_out += e * ld_dr;  act += e * n_head;  dheads += e * n_head;
  dM_f += e * NW;  dM_l += e * NW;  M_f += e * NW;  M_l += e * NW;
  dM_f_prev += e * NW;  dM_l_prev += e * NW;
  dw_r += e * N;  dw_wf += e * N;  w_r += e * N;  w_wf += e * N;  w_r_prev += e * N;
  w_wf_prev += e * N;  w_lu_prev += e * N;  dw_r_prev += e * N;  dw_wf_prev += e * N;
  const T *k = act, *a_f = act + W, *a_l = act + 2 * W;
  const T g_w = act[3 * W];
  T *dk = dheads, *da_f = dheads + W, *da_l = dheads + 2 * W;   // sums, activated at the end
  for (int c = 0; c < 3 * W; ++c) dheads[c] = 0;

  // 1. read: dw_r = dr M_l^T, plus what w_r[t] gets from step t+1's gate; the softmax's sum
  //    s = sum_i dw_r w_r. dw_r waits in dw_r_prev until step 2 overwrites it.
  T s = 0;
  for (int i = 0; i < N; ++i) {
    dw_r_prev[i] = row_dot_sum(dr_next, dr_out, M_l + i * W, W) + dw_r[i];
    s += dw_r_prev[i] * w_r[i];
  }
  // 2. slot by slot: softmax and cosine backward, the feature write, the write weights and
  //    the label write backward, each slot's total memory gradients formed once.
  const T kk = row_dot(k, k, W) + eps_inside;
  T sum_E = 0, dg_w = 0;
  for (int i = 0; i < N; ++i) {
    const T* M_f_i = M_f + i * W;
    const T MM = row_dot(M_f_i, M_f_i, W) + eps_inside;
    const Cosine<T> c = cosine(row_dot(k, M_f_i, W), kk, MM, eps_product);
    const T dK_scaled = w_r[i] * (dw_r_prev[i] - s) / c.denom;   // softmax backward, / den
    const T E_i = dK_scaled * c.K * c.P;
    sum_E += E_i;
    T dw_wf_i, dw_wf_prev_i;
    flmn_slot_backward(dK_scaled, E_i / (MM + tiny), (T)1 - w_lu_prev[i], w_r[i], w_wf[i],
                       w_wf_prev[i], k, a_f, a_l, M_f_i, dM_f + i * W, dM_l + i * W, dr_next,
                       dr_out, dk, da_f, da_l, dM_f_prev + i * W, dM_l_prev + i * W, W,
                       dw_wf_i, dw_wf_prev_i);
    dw_wf_prev[i] = dw_wf_prev_i;
    // write weights: w_wf[t] also feeds step t+1's label write
    const T dw_w = dw_wf_i + dw_wf[i];
    dg_w += dw_w * (w_r_prev[i] - w_lu_prev[i]);
    dw_r_prev[i] = g_w * dw_w;
  }
  for (int v = 0; v < W; ++v) dk[v] = dk[v] - sum_E / (kk + tiny) * k[v];
  // the interface derivative (ops.interface_backward)
  for (int c = 0; c < 3 * W; ++c) dheads[c] = dheads[c] * ((T)1 - act[c] * act[c]);
  dheads[3 * W] = dg_w * g_w * ((T)1 - g_w);
""")

# mann.memory_step_forward: heads (E, n_head) = h W_head laid out [k | a | alpha] (R W, R W, R)
# or, key_is_add, [k | alpha]; M (E, N, W); per-head weights (E, R, N); r rows at e * ld_r.
MANN_FORWARD = RawSpec("mann_step_forward", """
    const T* heads, const T* b_head, int bias_every,
    const T* M_prev, const T* w_r_prev, const T* w_lu_prev, const T* w_u_prev,
    T* act, T* M, T* w_r, T* w_w, T* w_u, T* w_lu, T* r, int ld_r,
    int E, int N, int W, int R, int key_is_add, T gamma, T eps_product, T eps_inside""", """
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;                     // thread e computes episode e, alone
  // every pointer moved to episode e's rows (n_head, N W, N or R N values each), b_head to
  // its model's row (bias_every episodes a model), r to row e of the [r | h] buffer (ld_r apart)
  const int n_vec = key_is_add ? R * W : 2 * R * W, n_head = n_vec + R;
  const long long NW = (long long)N * W, RN = (long long)R * N;
  heads += e * n_head;  b_head += e / bias_every * n_head;  act += e * n_head;  r += e * ld_r;
  M_prev += e * NW;  M += e * NW;  w_u_prev += e * N;  w_u += e * N;
  w_r_prev += e * RN;  w_lu_prev += e * RN;  w_r += e * RN;  w_w += e * RN;  w_lu += e * RN;

  // k^j, a^j = tanh(heads + b_head);  g_w^j = sigma(alpha^j)     (ops.interface_forward)
  tanh_sum(heads, b_head, act, n_vec);
  for (int j = 0; j < R; ++j) act[n_vec + j] = sigma(heads[n_vec + j] + b_head[n_vec + j]);
  const T *k = act, *a = key_is_add ? act : act + R * W, *g_w = act + n_vec;

  // w_w^j = lu^j + g_w^j (w_r^j - lu^j)
  for (int j = 0; j < R; ++j)
    write_weights(g_w[j], w_r_prev + j * N, w_lu_prev + j * N, w_w + j * N, N);
  // M = M_prev (1 - lu^1) + sum_j w_w^j a^j: only the first least-used slot is erased
  for (int i = 0; i < N; ++i)
    mann_write_row(w_w + i, N, a, R, M_prev + i * W, (T)1 - w_lu_prev[i], M + i * W, W);
  // w_r^j = softmax_i cos(k^j, M[i]);  r^j = w_r^j M
  address(k, M, N, W, R, eps_product, eps_inside, w_u, w_r);
  for (int j = 0; j < R; ++j) read_memory(w_r + j * N, M, N, W, r + j * W);
  // w_u = gamma w_u_prev + sum_j w_r^j + sum_j w_w^j;  lu = the R least used
  for (int i = 0; i < N; ++i) {
    T sum_r = 0, sum_w = 0;
    for (int j = 0; j < R; ++j) {
      sum_r += w_r[j * N + i];
      sum_w += w_w[j * N + i];
    }
    w_u[i] = gamma * w_u_prev[i] + sum_r + sum_w;
  }
  least_used(w_u, N, R, w_lu);
""")

# mann.memory_step_backward (docs/derivations.md#mann-step): dr = dr_next + dr_out (rows at
# e * ld_dr), dmem = (dM, dw_r) from step t+1; the cache is act and the state after t and t-1.
MANN_BACKWARD = RawSpec("mann_step_backward", """
    const T* dr_next, const T* dr_out, int ld_dr, const T* dM, const T* dw_r,
    const T* act, const T* M, const T* w_r, const T* w_w, const T* w_r_prev, const T* w_lu_prev,
    T* dheads, T* dM_prev, T* dw_r_prev,
    int E, int N, int W, int R, int key_is_add, T eps_product, T eps_inside, T tiny""", """
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;                     // thread e computes episode e, alone
  // every pointer moved to episode e's rows (n_head, N W, N or R N values each), dr_next and
  // dr_out to row e of their [r | h] buffers (ld_dr apart)
  const int n_vec = key_is_add ? R * W : 2 * R * W, n_head = n_vec + R;
  const long long NW = (long long)N * W, RN = (long long)R * N;
  dr_next += e * ld_dr;  dr_out += e * ld_dr;  act += e * n_head;  dheads += e * n_head;
  dM += e * NW;  M += e * NW;  dM_prev += e * NW;
  dw_r += e * RN;  w_r += e * RN;  w_w += e * RN;  w_r_prev += e * RN;  w_lu_prev += e * RN;
  dw_r_prev += e * RN;
  const T *k = act, *a = key_is_add ? act : act + R * W, *g_w = act + n_vec;
  // sums, activated at the end; with the key as add vector da^j adds into dk^j (a = k)
  T *dk = dheads, *da = key_is_add ? dheads : dheads + R * W;
  for (int c = 0; c < n_vec; ++c) dheads[c] = 0;

  // 1. read, per head: dw_r^j = dr^j M^T plus step t+1's (the gate); s^j = sum_i dw_r^j w_r^j.
  //    dw_r waits in dw_r_prev until step 2 overwrites it.
  T kk[MAX_HEADS], s[MAX_HEADS], sum_E[MAX_HEADS], dg_w[MAX_HEADS];
  for (int j = 0; j < R; ++j) {
    kk[j] = row_dot(k + j * W, k + j * W, W) + eps_inside;
    s[j] = sum_E[j] = dg_w[j] = 0;
    for (int i = 0; i < N; ++i) {
      dw_r_prev[j * N + i] = row_dot_sum(dr_next + j * W, dr_out + j * W, M + i * W, W)
                             + dw_r[j * N + i];
      s[j] += dw_r_prev[j * N + i] * w_r[j * N + i];
    }
  }
  // 2. slot by slot: softmax and cosine backward of every head, then M[t]'s total gradient dM_t
  //    (addressing + read + step t+1's write; formed head by head in dM_prev's row, which
  //    receives dM_t keep at the end) and the write and write-weight backward.
  for (int i = 0; i < N; ++i) {
    const T* M_i = M + i * W;
    T* dM_t = dM_prev + i * W;
    const T MM = row_dot(M_i, M_i, W) + eps_inside;
    T dK_scaled[MAX_HEADS], sum_E_i = 0;
    for (int j = 0; j < R; ++j) {
      const Cosine<T> c = cosine(row_dot(k + j * W, M_i, W), kk[j], MM, eps_product);
      dK_scaled[j] = w_r[j * N + i] * (dw_r_prev[j * N + i] - s[j]) / c.denom;
      const T E_ji = dK_scaled[j] * c.K * c.P;
      sum_E[j] += E_ji;
      sum_E_i += E_ji;
    }
    const T E_MM = sum_E_i / (MM + tiny);
    for (int v = 0; v < W; ++v) dM_t[v] = dM[i * W + v] - E_MM * M_i[v];
    for (int j = 0; j < R; ++j)
      mann_head_backward(dK_scaled[j], w_r[j * N + i], k + j * W, dr_next + j * W,
                         dr_out + j * W, M_i, dM_t, dk + j * W, W);
    for (int j = 0; j < R; ++j) {
      const T dw_w = mann_head_write_backward(w_w[j * N + i], a + j * W, dM_t, da + j * W, W);
      dg_w[j] += dw_w * (w_r_prev[j * N + i] - w_lu_prev[j * N + i]);
      dw_r_prev[j * N + i] = g_w[j] * dw_w;
    }
    const T keep = (T)1 - w_lu_prev[i];
    for (int v = 0; v < W; ++v) dM_t[v] = dM_t[v] * keep;
  }
  for (int j = 0; j < R; ++j)
    for (int v = 0; v < W; ++v)
      dk[j * W + v] = dk[j * W + v] - sum_E[j] / (kk[j] + tiny) * k[j * W + v];
  // the interface derivative (ops.interface_backward)
  for (int c = 0; c < n_vec; ++c) dheads[c] = dheads[c] * ((T)1 - act[c] * act[c]);
  for (int j = 0; j < R; ++j) dheads[n_vec + j] = dg_w[j] * g_w[j] * ((T)1 - g_w[j]);
""")

SPECS = (FLMN_FORWARD, FLMN_BACKWARD, MANN_FORWARD, MANN_BACKWARD)
CTYPES = {"float32": "float", "float64": "double"}


# --------------------------------------------------------------------------- the CUDA module

FILE = "flmn_np/core/step_kernels.py"      # named by #line, as the package lays it out
_FILE_TEXT = Path(__file__).read_text()


def located(text, file_text=None, file=FILE):
    """text with `#line` directives giving, for each run of its lines written verbatim in this
    file, the line it is written on, so that a compiler's message (NVRTC's, g++'s) names the
    line of the file, not of SOURCE; lines not found (a mutated copy's) carry no directive."""
    file_text = _FILE_TEXT if file_text is None else file_text
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        j, at = i, -1
        while j < len(lines):                      # the longest run lines[i:j+1] in the file
            found = file_text.find("\n".join(lines[i:j + 1]))
            if found < 0:
                break
            at, j = found, j + 1
        if at < 0 or not "".join(lines[i:j]).strip():
            out.append(lines[i])
            i += 1
            continue
        out.append(f'#line {file_text[:at].count(chr(10)) + 1} "{file}"')
        out += lines[i:j]
        i = j
    return "\n".join(out)


def kernel_source(spec):
    """`template <typename T> __global__ void name(params) { body }`, the body located."""
    return (f"template <typename T>\n__global__ void {spec.name}({spec.params}) {{\n"
            f"{located(spec.body)}}}\n")


SOURCE = PREAMBLE + located(HELPERS) + "\n" + "".join(kernel_source(spec) for spec in SPECS)
NAME_EXPRESSIONS = tuple(f"{spec.name}<{c}>" for spec in SPECS for c in CTYPES.values())


def param_kinds(spec):
    """[(kind, name)] of a spec's C parameters: kind 'array' (a T pointer), 'int' or 'T'."""
    kinds = []
    for p in spec.params.split(","):
        *ctype, name = p.replace("*", " * ").split()
        ctype = " ".join(ctype)
        kinds.append(("array" if "*" in ctype else "int" if ctype == "int" else "T", name))
        assert ctype in ("const T *", "T *", "int", "T"), f"{spec.name}: unsupported {p!r}"
    return kinds


# ------------------------------------------------------------------------------- the wrappers
# Each allocates its outputs with xp and hands the spec, one thread per episode and the
# arguments in the spec's order to the launcher of its arrays' level (launcher, below).

def _episodes(x, n_trailing):
    """E, the number of episodes: the product of x's leading axes (all but n_trailing)."""
    return math.prod(x.shape[:x.ndim - n_trailing])


def _eps_pair(cfg, eps):
    """(eps_product, eps_inside) for cfg.cosine_eps: eps in one place, 0 in the other
    (addressing.cosine_forward)."""
    return (eps, 0.0) if cfg.cosine_eps == "product" else (0.0, eps)


def _rows(x, buffer, width):
    """(buffer, its row length): the rows r (or dr) live in, x's leading shape by `width`
    columns; a new one when buffer is None."""
    if buffer is None:
        xp = array_namespace(x)
        buffer = xp.empty((*x.shape[:-1], width), dtype=x.dtype)
    return buffer, buffer.shape[-1]


def flmn_step_forward(heads, b_head, mem_prev, cfg, eps, rh=None, launch=None):
    """flmn.memory_step_forward with the bias added inside, in one kernel  [FLMN eq 1-10].

    heads (..., 3W+1) = h W_head without b_head; b_head (3W+1,) (or one row per model, stacked
    (G, 3W+1) for heads (G, B, 3W+1)); mem_prev: FLMNMemory; eps: the cosine's epsilon
    (addressing.COSINE_EPS), placed by cfg.cosine_eps; rh None, or a (..., ld) buffer whose
    first W columns receive r (the recurrent [r | h] row).
    ->  r (..., W) (a view of rh), mem: FLMNMemory, cache (act, mem, mem_prev).
    """
    launch = launcher(heads, launch)
    xp = array_namespace(heads)
    E, N, W = _episodes(heads, 1), cfg.n_slots, cfg.width
    rh, ld_r = _rows(heads, rh, W)
    act = xp.empty(heads.shape, dtype=heads.dtype)
    M_f, M_l = (xp.empty(mem_prev.M_f.shape, dtype=heads.dtype) for _ in range(2))
    w_r, w_wf, w_lu = (xp.empty(mem_prev.w_r.shape, dtype=heads.dtype) for _ in range(3))
    w_u = xp.empty(mem_prev.w_u.shape, dtype=heads.dtype)
    launch(FLMN_FORWARD, E, (heads, b_head, E // _episodes(b_head, 1),
                             mem_prev.M_f, mem_prev.M_l, mem_prev.w_r, mem_prev.w_wf,
                             mem_prev.w_u, mem_prev.w_lu,
                             act, M_f, M_l, w_r, w_wf, w_u, w_lu, rh, ld_r,
                             E, N, W, cfg.gamma, *_eps_pair(cfg, eps)))
    mem = type(mem_prev)(M_f=M_f, M_l=M_l, w_r=w_r, w_wf=w_wf, w_u=w_u, w_lu=w_lu)
    return rh[..., :W], mem, (act, mem, mem_prev)


def flmn_step_backward(drh_next, drh_out, dmem, cache, cfg, eps, dheads=None,
                       launch=None):
    """flmn.memory_step_backward with dr = drh_next + drh_out summed inside, in one kernel.

    drh_next, drh_out (..., ld): rows whose first W columns are the gradients reaching r[t] from
    step t+1's controller and from the output layer at t; dmem: FLMNMemory from step t+1 (w_u,
    w_lu None); cache from flmn_step_forward; dheads None or a (..., 3W+1) buffer to fill.
    ->  dheads (..., 3W+1), the gradient of heads (and of b_head's row), dmem_prev: FLMNMemory.
    """
    launch = launcher(drh_next, launch)
    act, mem, mem_prev = cache
    xp = array_namespace(act)
    E, N, W = _episodes(act, 1), cfg.n_slots, cfg.width
    if dheads is None:
        dheads = xp.empty(act.shape, dtype=act.dtype)
    dM_f_prev, dM_l_prev = (xp.empty(mem.M_f.shape, dtype=act.dtype) for _ in range(2))
    dw_r_prev, dw_wf_prev = (xp.empty(mem.w_r.shape, dtype=act.dtype) for _ in range(2))
    launch(FLMN_BACKWARD, E, (drh_next, drh_out, drh_next.shape[-1],
                              dmem.M_f, dmem.M_l, dmem.w_r, dmem.w_wf,
                              act, mem.M_f, mem.M_l, mem.w_r, mem.w_wf,
                              mem_prev.w_r, mem_prev.w_wf, mem_prev.w_lu,
                              dheads, dM_f_prev, dM_l_prev, dw_r_prev, dw_wf_prev,
                              E, N, W, *_eps_pair(cfg, eps), _tiny(act)))
    return dheads, type(dmem)(M_f=dM_f_prev, M_l=dM_l_prev, w_r=dw_r_prev, w_wf=dw_wf_prev,
                              w_u=None, w_lu=None)


def _tiny(x):
    """The smallest normal number of x's dtype (addressing._nonzero)."""
    return float(array_namespace(x).finfo(x.dtype).smallest_normal)


def mann_step_forward(heads, b_head, mem_prev, cfg, eps, rh=None, launch=None):
    """mann.memory_step_forward with the bias added inside, in one kernel (R <= MAX_HEADS).

    heads (..., head_size) = h W_head without b_head; b_head (head_size,) (or (G, head_size));
    mem_prev: MANNMemory; eps as for flmn_step_forward; rh None or a (..., ld) buffer whose
    first R W columns receive r.
    ->  r (..., R W) (a view of rh), mem: MANNMemory, cache (act, mem, mem_prev).
    """
    launch = launcher(heads, launch)
    xp = array_namespace(heads)
    E, N, W, R = _episodes(heads, 1), cfg.n_slots, cfg.width, cfg.reads
    rh, ld_r = _rows(heads, rh, R * W)
    act = xp.empty(heads.shape, dtype=heads.dtype)
    M = xp.empty(mem_prev.M.shape, dtype=heads.dtype)
    w_r, w_w, w_lu = (xp.empty(mem_prev.w_r.shape, dtype=heads.dtype) for _ in range(3))
    w_u = xp.empty(mem_prev.w_u.shape, dtype=heads.dtype)
    launch(MANN_FORWARD, E, (heads, b_head, E // _episodes(b_head, 1),
                             mem_prev.M, mem_prev.w_r, mem_prev.w_lu, mem_prev.w_u,
                             act, M, w_r, w_w, w_u, w_lu, rh, ld_r,
                             E, N, W, R, int(cfg.mann_add == "key"), cfg.gamma,
                             *_eps_pair(cfg, eps)))
    mem = type(mem_prev)(M=M, w_r=w_r, w_w=w_w, w_u=w_u, w_lu=w_lu)
    return rh[..., :R * W], mem, (act, mem, mem_prev)


def mann_step_backward(drh_next, drh_out, dmem, cache, cfg, eps, dheads=None,
                       launch=None):
    """mann.memory_step_backward with dr = drh_next + drh_out summed inside, in one kernel.

    drh_next, drh_out (..., ld): rows whose first R W columns reach r[t] (step t+1, output
    layer); dmem: MANNMemory from step t+1 (M, w_r); cache from mann_step_forward.
    ->  dheads (..., head_size), dmem_prev: MANNMemory (w_w, w_u, w_lu None).
    """
    launch = launcher(drh_next, launch)
    act, mem, mem_prev = cache
    xp = array_namespace(act)
    E, N, W, R = _episodes(act, 1), cfg.n_slots, cfg.width, cfg.reads
    if dheads is None:
        dheads = xp.empty(act.shape, dtype=act.dtype)
    dM_prev = xp.empty(mem.M.shape, dtype=act.dtype)
    dw_r_prev = xp.empty(mem.w_r.shape, dtype=act.dtype)
    launch(MANN_BACKWARD, E, (drh_next, drh_out, drh_next.shape[-1], dmem.M, dmem.w_r,
                              act, mem.M, mem.w_r, mem.w_w, mem_prev.w_r, mem_prev.w_lu,
                              dheads, dM_prev, dw_r_prev,
                              E, N, W, R, int(cfg.mann_add == "key"), *_eps_pair(cfg, eps),
                              _tiny(act)))
    return dheads, type(dmem)(M=dM_prev, w_r=dw_r_prev, w_w=None, w_u=None, w_lu=None)


def supported(cfg):
    """Whether cfg's memory step has a kernel here: FLMN, or MANN with R <= MAX_HEADS."""
    return cfg.model == "flmn" or cfg.reads <= MAX_HEADS


STEP_FORWARD = {"flmn": flmn_step_forward, "mann": mann_step_forward}
STEP_BACKWARD = {"flmn": flmn_step_backward, "mann": mann_step_backward}


# ----------------------------------------------------------------------- launching the kernels

@functools.cache
def cupy_module():
    """The `cupy.RawModule` of SOURCE (compiled by CuPy at its first use, both float types)."""
    import cupy
    return cupy.RawModule(code=SOURCE, options=OPTIONS, name_expressions=NAME_EXPRESSIONS)


class _CupyLaunch:
    """One kernel of cupy_module() for one float type, called as (n_threads, args)."""

    def __init__(self, spec, dtype):
        self.name, self.kinds = spec.name, param_kinds(spec)
        self.scalar = np.dtype(dtype).type
        self.function = cupy_module().get_function(f"{spec.name}<{CTYPES[np.dtype(dtype).name]}>")

    def __call__(self, n_threads, args):
        values = []
        for (kind, name), a in zip(self.kinds, args, strict=True):
            if kind == "array":     # a copy would lose what the kernel writes: refused
                if not a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: {name} is not C-contiguous")
                values.append(a)
            else:
                values.append(np.int32(a) if kind == "int" else self.scalar(a))
        blocks = max(1, math.ceil(n_threads / THREADS_PER_BLOCK))
        self.function((blocks,), (THREADS_PER_BLOCK,), tuple(values))


class _TinyConfig(NamedTuple):
    """The fields of models.ModelConfig the wrappers below read (build_all's tiny models)."""
    model: str
    reads: int
    mann_add: str = "separate"
    n_slots: int = 3
    width: int = 2
    gamma: float = 0.95
    cosine_eps: str = "product"


# FLMN and MANN R = 2, its add vector separate and the key: every kernel of SOURCE
STARTUP_CONFIGS = (_TinyConfig("flmn", 1), _TinyConfig("mann", 2), _TinyConfig("mann", 2, "key"))
_FLMN_MEMORY = NamedTuple("FLMNMemory", [(f, object) for f in
                                         ("M_f", "M_l", "w_r", "w_wf", "w_u", "w_lu")])
_MANN_MEMORY = NamedTuple("MANNMemory", [(f, object) for f in ("M", "w_r", "w_w", "w_u", "w_lu")])


def _zero_memory(cfg, E, xp, dtype):
    """A memory of zeros of cfg's shapes (flmn.initial_memory's, mann.initial_memory's)."""
    N, W, R = cfg.n_slots, cfg.width, cfg.reads
    memory = _FLMN_MEMORY if cfg.model == "flmn" else _MANN_MEMORY
    return memory(*(xp.zeros((E, N, W) if f.startswith("M") else (E, N) if f == "w_u"
                             else (E, R, N), dtype=dtype) for f in memory._fields))


def build_all(xp, launch=None):
    """Compile SOURCE and run every kernel (both float types) once now, on tiny zero inputs
    (STARTUP_CONFIGS), through the wrappers below, as kernels.build_all does for the
    elementwise kernels: a missing NVRTC, a source that does not build or a launch that fails
    shows at startup (backend.get_xp), not at the first step. launch: the launcher (default
    launch_cupy); returns the (spec name, dtype) pairs launched."""
    launched = []
    launch = launch or launch_cupy

    def recording(spec, n_threads, args):
        launched.append((spec.name, next(a.dtype for a in args if hasattr(a, "dtype")).name))
        launch(spec, n_threads, args)

    for cfg in STARTUP_CONFIGS:
        W, R, E = cfg.width, cfg.reads, 2
        head = 3 * W + 1 if cfg.model == "flmn" else (1 if cfg.mann_add == "key" else 2) * R * W + R
        for dtype in CTYPES:
            heads, b_head = xp.zeros((E, head), dtype=dtype), xp.zeros((head,), dtype=dtype)
            mem = _zero_memory(cfg, E, xp, dtype)
            r, _, cache = STEP_FORWARD[cfg.model](heads, b_head, mem, cfg, 1e-8, launch=recording)
            rows = xp.zeros(r.shape, dtype=dtype)
            STEP_BACKWARD[cfg.model](rows, rows, _zero_memory(cfg, E, xp, dtype), cache, cfg,
                                     1e-8, launch=recording)
    return launched


@functools.cache
def cupy_function(spec, dtype):
    """The launcher of one kernel for arrays of `dtype` (built once)."""
    return _CupyLaunch(spec, dtype)


def launch_cupy(spec, n_threads, args):
    """Run a spec on CuPy arrays: `n_threads` threads (one per episode), args in the order of
    spec.params (arrays, ints, numbers); outputs are written in place."""
    dtype = next(a.dtype for a in args if hasattr(a, "dtype"))
    cupy_function(spec, dtype)(n_threads, args)


def launcher(x, launch=None):
    """`launch` if given, else the raw launcher of array x's level (levels.Level.launch_raw),
    else launch_cupy."""
    return launch or levels.of(x).launch_raw or launch_cupy
