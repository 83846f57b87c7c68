"""The step level's kernels built for the CPU: the CUDA source of step_kernels.py and three
elementwise bodies of kernels.py compiled with the machine's C++ compiler.

One source, two targets. step_kernels.SOURCE, the very text cupy.RawModule compiles, is pasted
unchanged after a small C++ prelude (PRELUDE: __global__ and __device__ defined away,
blockIdx / blockDim / threadIdx as thread-local variables, the math functions), and each of its
kernels gets an extern "C" entry point that runs the kernel for every episode, the episodes spread
over the cores by OpenMP (schedule(static)). An episode is computed entirely by one thread, so
the results are bit-identical whatever the number of threads. The elementwise bodies of
kernels.LSTM_FORWARD_SUM, LSTM_BACKWARD_SUM and ADAM are pasted unchanged into generated loops
over rows and contiguous columns (one (data, row stride) per argument), loops the compiler
vectorizes; rows and fixed column chunks are spread over the threads.

    lib = build()                                     # compiled once, then loaded from the cache
    launch_cpu(spec, n_threads, args)                 # step_kernels.launch_cupy's contract
    launch_cpu_elementwise(spec, inputs, outputs)     # kernels.launch_cupy's contract (3 specs)

so that `step_kernels.flmn_step_forward(..., launch=launch_cpu)` and
`kernels.lstm_cell_forward_sum(..., launch=launch_cpu_elementwise)` run on NumPy arrays.

The build. One shared library holds every kernel for float and double, built with `CXX` (else g++
or c++ on PATH) and FLAGS, cached in FLMN_KERNEL_CACHE, else $XDG_CACHE_HOME/flmn-np/kernels,
else ~/.cache/flmn-np/kernels, under a sha256 of the source, the compiler's path and version,
the flags and the CPU (-march=native). Two processes may build at once: each compiles into a
temporary file of that folder and renames it into place (os.replace), so a library is only ever
loaded complete. No compiler, a failed build or a library that does not load raise
CpuKernelError, one line (with the compiler's first error line).

Flags. -O3 -march=native -fopenmp, -fno-math-errno (sqrt inlines and vectorizes) and
reassociation (-fassociative-math -fno-signed-zeros -fno-trapping-math), which lets the compiler
vectorize the kernels' sums over W and N; never -ffast-math or -ffinite-math-only, so NaN and
infinity propagate and checks for them keep working. With GCC, loops are never peeled or
versioned for alignment (--param), so which iterations take the vector path does not depend on
where an array happens to lie in memory: the results are bit-identical across runs, not only
across thread counts. On x86-64 glibc the prelude declares glibc's vector math (libmvec) for
tanh and exp, so the loops that call them vectorize too (15 ns per scalar tanh otherwise). The
numbers behind these choices: benchmarks/cpu_kernels.py (--strict builds without
reassociation: the memory steps take 2-2.7x as long).

Arguments. A call hands ~25 arguments to C, ~200 calls per training step, so the handover must be
cheap: arrays go as their object addresses (id(), CPython) and the C side reads data pointer,
shape, strides, flags and dtype from NumPy's array struct (PyArrayObject_fields, the public
layout of numpy/ndarraytypes.h), checking type, dtype, contiguity, alignment and writeability
itself (~4-6 us per call of 15-26 arguments, against 1-3 us per array for
`__array_interface__`). A self-check at load compares what C reads with what NumPy says for a
set of arrays, and refuses to run (CpuKernelError) on an interpreter whose objects are laid out
otherwise.

Threads. set_num_threads (default OMP_NUM_THREADS, else os.cpu_count()) spreads the episodes of
a memory step, and the rows and 4096-column chunks of an elementwise call of at least 16384
values, over OpenMP threads; a call ends when its slowest thread does, so a core taken by
another process delays every call (OMP_WAIT_POLICY=passive makes idle threads sleep at once
instead of spinning a while: ~10 us more per call on two threads, and no spinning thread to
compete with BLAS's). GNU OpenMP's thread pool does not survive fork(): a forked child runs on
one thread.

Contract, as on the GPU: arguments written by a kernel must not overlap any other argument.
"""
import ctypes
import functools
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import FlmnError
from . import kernels, step_kernels


class CpuKernelError(FlmnError, RuntimeError):
    """The CPU kernels cannot be used here (no compiler, a failed build, a library that does not
    load or an interpreter they cannot read arrays from); the message says why in one line."""


# ------------------------------------------------------------------------------- the flags

BASE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17",
              "-fno-math-errno")
REASSOCIATE_FLAGS = ("-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math")
# GCC only: no peeling or versioning for alignment (see the module docstring)
GCC_FLAGS = ("--param=vect-max-peeling-for-alignment=0",
             "--param=vect-max-version-for-alignment-checks=0")
# GCC on x86-64: 256-bit vectors for the memory steps' short loops over W (the elementwise
# loops ask for 512 bits where the CPU has them: FLMN_WIDE)
X86_GCC_FLAGS = ("-mprefer-vector-width=256",)
ELEMENTWISE = (kernels.LSTM_FORWARD_SUM, kernels.LSTM_BACKWARD_SUM, kernels.ADAM)
# parameters of an elementwise spec that take one value per row (a number, or an array whose
# last axis is 1); every other parameter is a full (rows, cols) operand with unit column stride
ROW_PARAMS = {kernels.ADAM.name: ("lr_t", "one_minus_b1", "one_minus_b2", "eps")}
CHUNK = 4096           # columns per work item of an elementwise call (fixed: thread-independent)
PARALLEL_MIN = 16384   # elements below which an elementwise call runs on one thread
FORMAT = 1             # bump when the generated code changes in a way the hash would not see

PRELUDE = r"""
// flmn-np: the step level's kernels built for the CPU (flmn_np/core/cpu_kernels.py).
// The CUDA built-ins the source uses, for one episode per call: __global__ and __device__
// defined away, the thread's coordinates thread-local, the math functions from <cmath>.
#include <cmath>
#include <cstdint>
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) \
    && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 35)
// glibc's vector math (libmvec, reached through libm): declared so that loops calling tanh and
// exp vectorize (glibc declares them only under -ffast-math, which is not used here)
extern "C" {
__attribute__((__simd__("notinbranch"))) float tanhf(float) noexcept;
__attribute__((__simd__("notinbranch"))) double tanh(double) noexcept;
__attribute__((__simd__("notinbranch"))) float expf(float) noexcept;
__attribute__((__simd__("notinbranch"))) double exp(double) noexcept;
}
#define FLMN_LIBMVEC 1
#else
#define FLMN_LIBMVEC 0
#endif
using std::tanh; using std::exp; using std::log; using std::sqrt; using std::fabs;
using std::min; using std::max;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FLMN_WIDE __attribute__((target("prefer-vector-width=512")))   // the elementwise loops
#else
#define FLMN_WIDE
#endif
#define __global__
#define __device__
#define __forceinline__ inline
struct flmn_dim3 { unsigned int x, y, z; };
static thread_local flmn_dim3 blockIdx, blockDim, threadIdx;
"""

# Reading NumPy arrays from their object address; checks; work splitting.
RUNTIME = r"""
namespace flmn_cpu {
// the head of a CPython object and of NumPy's PyArrayObject_fields / PyArray_Descr
struct PyHead { intptr_t refcnt; const void* type; };
struct Descr { PyHead head; const void* typeobj; char kind, type, byteorder, flags; int type_num; };
struct Array { PyHead head; char* data; int nd; const intptr_t* dims; const intptr_t* strides;
               const void* base; const Descr* descr; int flags; };
enum { C_CONTIGUOUS = 0x1, ALIGNED = 0x100, WRITEABLE = 0x400 };
enum { BAD_TYPE = 1, BAD_DTYPE = 2, NOT_CONTIGUOUS = 3, NOT_ALIGNED = 4, READ_ONLY = 5,
       BAD_LAYOUT = 6, BAD_SHAPE = 7 };
static const void* ndarray_type = nullptr;
static int float_num = -1, double_num = -1;
static char swapped = 0;

// 0 float, 1 double, -1 anything else (or not in native byte order)
static inline int float_kind(const Array* a) {
  if (a->descr->byteorder == swapped) return -1;
  if (a->descr->type_num == float_num) return 0;
  if (a->descr->type_num == double_num) return 1;
  return -1;
}

// an array argument of a memory-step kernel: C-contiguous, aligned, of the kind of the first
static inline int check_raw(const void* obj, bool writes, int* kind) {
  const Array* a = (const Array*)obj;
  if (a == nullptr || a->head.type != ndarray_type) return BAD_TYPE;
  const int k = float_kind(a);
  if (k < 0 || (*kind >= 0 && k != *kind)) return BAD_DTYPE;
  *kind = k;
  if (!(a->flags & C_CONTIGUOUS)) return NOT_CONTIGUOUS;
  if (!(a->flags & ALIGNED)) return NOT_ALIGNED;
  if (writes && !(a->flags & WRITEABLE)) return READ_ONLY;
  return 0;
}

// an operand of an elementwise kernel: its rows (of `cols` unit-stride values) at data + r * rs
struct Operand { char* data; int64_t rs; double value; };

// The array viewed as (rows, cols), its leading axes collapsed into rows: false if they do not
// collapse to one stride or the last axis is not unit-stride.
static inline bool as_rows(const Array* a, int64_t itemsize, int64_t* rows, int64_t* cols,
                           int64_t* rs) {
  *rows = 1; *rs = 0; *cols = 1;
  if (a->nd == 0) return true;
  *cols = a->dims[a->nd - 1];
  if (*cols > 1 && a->strides[a->nd - 1] != itemsize) return false;
  for (int d = a->nd - 2; d >= 0; --d) {
    if (a->dims[d] == 1) continue;
    if (*rows == 1) *rs = a->strides[d];
    else if (a->strides[d] != *rs * *rows) return false;
    *rows *= a->dims[d];
  }
  if (*rs % itemsize != 0) return false;
  return true;
}

// A full operand (rows, cols) or, row_param, one value per row: a number (obj null), or an array
// of shape (rows or 1, 1).
static inline int check_operand(const void* obj, double value, bool writes, bool row_param,
                                int kind, int64_t rows, int64_t cols, Operand* op) {
  op->data = nullptr; op->rs = 0; op->value = value;
  if (obj == nullptr) return row_param ? 0 : BAD_TYPE;
  const Array* a = (const Array*)obj;
  if (a->head.type != ndarray_type) return BAD_TYPE;
  if (float_kind(a) != kind) return BAD_DTYPE;
  if (!(a->flags & ALIGNED)) return NOT_ALIGNED;
  if (writes && !(a->flags & WRITEABLE)) return READ_ONLY;
  int64_t r, c, rs;
  if (!as_rows(a, kind ? 8 : 4, &r, &c, &rs)) return BAD_LAYOUT;
  if (row_param ? (c != 1 || (r != rows && r != 1)) : (r != rows || c != cols)) return BAD_SHAPE;
  op->data = a->data;
  op->rs = r == 1 ? 0 : rs;
  return 0;
}

template <typename T> static inline T row_value(const Operand& op, int64_t r) {
  return op.data ? *(const T*)(op.data + r * op.rs) : (T)op.value;
}
template <typename T> static inline T* row_at(const Operand& op, int64_t r, int64_t c0) {
  return (T*)(op.data + r * op.rs) + c0;
}
template <typename T> static inline T* data(const void* obj) {
  return (T*)((const Array*)obj)->data;
}
}  // namespace flmn_cpu

extern "C" void flmn_cpu_init(const void* ndarray_type, int float_num, int double_num,
                              char swapped) {
  flmn_cpu::ndarray_type = ndarray_type;
  flmn_cpu::float_num = float_num;
  flmn_cpu::double_num = double_num;
  flmn_cpu::swapped = swapped;
}

// What the C side reads from an array, for the self-check at load: 0 data, 1 nd, 2 dims[0],
// 3 strides[0], 4 flags (C_CONTIGUOUS | ALIGNED | WRITEABLE bits), 5 float kind, 6 is ndarray.
extern "C" int64_t flmn_cpu_probe(const void* obj, int what) {
  const flmn_cpu::Array* a = (const flmn_cpu::Array*)obj;
  switch (what) {
    case 0: return (int64_t)(intptr_t)a->data;
    case 1: return a->nd;
    case 2: return a->dims[0];
    case 3: return a->strides[0];
    case 4: return a->flags & (flmn_cpu::C_CONTIGUOUS | flmn_cpu::ALIGNED | flmn_cpu::WRITEABLE);
    case 5: return flmn_cpu::float_kind(a);
    case 6: return a->head.type == flmn_cpu::ndarray_type;
  }
  return -1;
}

extern "C" int flmn_cpu_libmvec() { return FLMN_LIBMVEC; }
"""

RAW_ENTRY = r"""
template <typename T>
static void flmn_cpu_run_{name}(int n_omp, int64_t n_threads, {typed_params}) {{
  #pragma omp parallel for schedule(static) num_threads(n_omp) if (n_omp > 1 && n_threads > 1)
  for (int64_t e = 0; e < n_threads; ++e) {{
    blockIdx.x = (unsigned int)e;  blockDim.x = 1;  threadIdx.x = 0;
    {name}<T>({names});
  }}
}}

extern "C" int flmn_cpu_{name}(int n_omp, int64_t n_threads, {c_params}) {{
  int kind = -1, rc;
{checks}
  if (n_threads <= 0) return 0;
  if (n_omp > n_threads) n_omp = (int)n_threads;
  if (kind == 0) flmn_cpu_run_{name}<float>(n_omp, n_threads, {float_args});
  else flmn_cpu_run_{name}<double>(n_omp, n_threads, {double_args});
  return 0;
}}
"""

ELEMENTWISE_ENTRY = r"""
template <typename T>
FLMN_WIDE static void flmn_cpu_cols_{name}(int64_t _n, {col_params}) {{
  for (int64_t _j = 0; _j < _n; ++_j) {{
{refs}
    {{{body}}}
  }}
}}

template <typename T>
FLMN_WIDE static void flmn_cpu_rows_{name}(int n_omp, int64_t rows, int64_t cols,
                                 const flmn_cpu::Operand* op) {{
  const int64_t chunks = (cols + {chunk} - 1) / {chunk}, items = rows * chunks;
  #pragma omp parallel for schedule(static) num_threads(n_omp) \
      if (n_omp > 1 && items > 1 && rows * cols >= {parallel_min})
  for (int64_t it = 0; it < items; ++it) {{
    const int64_t r = it / chunks, c0 = (it % chunks) * {chunk};
    const int64_t n = cols - c0 < {chunk} ? cols - c0 : {chunk};
    flmn_cpu_cols_{name}<T>(n, {col_args});
  }}
}}

extern "C" int flmn_cpu_{name}(int n_omp, {c_params}) {{
  const flmn_cpu::Array* first = (const flmn_cpu::Array*){first};
  if (first == nullptr || first->head.type != flmn_cpu::ndarray_type) return {first_index} * 16 + 1;
  const int kind = flmn_cpu::float_kind(first);
  if (kind < 0) return {first_index} * 16 + 2;
  int64_t rows, cols, rs;
  if (!flmn_cpu::as_rows(first, kind ? 8 : 4, &rows, &cols, &rs)) return {first_index} * 16 + 6;
  flmn_cpu::Operand op[{n_ops}];
  int rc;
{checks}
  if (rows <= 0 || cols <= 0) return 0;
  if (kind == 0) flmn_cpu_rows_{name}<float>(n_omp, rows, cols, op);
  else flmn_cpu_rows_{name}<double>(n_omp, rows, cols, op);
  return 0;
}}
"""

REASONS = {1: "is not a NumPy array", 2: "is not of the kernel's float dtype (float32 or float64, "
           "the same for every array, native byte order)", 3: "is not C-contiguous",
           4: "is not aligned", 5: "is read-only", 6: "has a layout the CPU kernel does not "
           "take (its last axis must be unit-stride and its leading axes one stride)",
           7: "has a shape that does not match the outputs'"}


# --------------------------------------------------------------------------- the generated C++

def _raw_entry(spec):
    """The C++ entry point of one step_kernels spec: checks, then the kernel for every episode."""
    kinds = step_kernels.param_kinds(spec)
    writes = {name: not p.strip().startswith("const") for p, (_, name) in
              zip(spec.params.split(","), kinds)}
    c_params, typed, names, checks, fargs, dargs = [], [], [], [], [], []
    for index, (kind, name) in enumerate(kinds):
        names.append(name)
        if kind == "array":
            c_params.append(f"const void* {name}")
            typed.append(f"{'T*' if writes[name] else 'const T*'} {name}")
            checks.append(f"  if ((rc = flmn_cpu::check_raw({name}, {str(writes[name]).lower()}, "
                          f"&kind))) return {index} * 16 + rc;")
            for ctype, out in (("float", fargs), ("double", dargs)):
                const = "" if writes[name] else "const "
                out.append(f"({const}{ctype}*)flmn_cpu::data<{ctype}>({name})")
        elif kind == "int":
            c_params.append(f"int {name}")
            typed.append(f"int {name}")
            fargs.append(name)
            dargs.append(name)
        else:
            c_params.append(f"double {name}")
            typed.append(f"T {name}")
            fargs.append(f"(float){name}")
            dargs.append(name)
    return RAW_ENTRY.format(name=spec.name, typed_params=", ".join(typed), names=", ".join(names),
                            c_params=", ".join(c_params), checks="\n".join(checks),
                            float_args=", ".join(fargs), double_args=", ".join(dargs))


def _elementwise_params(spec):
    """[(name, is_output, is_row_param)] of an elementwise spec, inputs then outputs."""
    out = []
    for params, is_out in ((spec.in_params, False), (spec.out_params, True)):
        for p in params.split(","):
            ctype, name = p.split()
            if ctype != "T":
                raise ValueError(f"{spec.name}: only T-typed parameters are supported, got {p!r}")
            out.append((name, is_out, name in ROW_PARAMS.get(spec.name, ())))
    return out


def _elementwise_entry(spec):
    """The C++ entry point of one elementwise spec: checks, then rows x column chunks."""
    params = _elementwise_params(spec)
    first = next(i for i, (_, is_out, _) in enumerate(params) if is_out)
    c_params, col_params, col_args, refs, checks = [], [], [], [], []
    for index, (name, is_out, row) in enumerate(params):
        if row:
            c_params.append(f"const void* {name}, double {name}_value")
            col_params.append(f"T {name}")
            col_args.append(f"flmn_cpu::row_value<T>(op[{index}], r)")
            value = f"{name}_value"
        else:
            c_params.append(f"const void* {name}")
            col_params.append(f"{'T' if is_out else 'const T'}* __restrict__ _{name}")
            col_args.append(f"flmn_cpu::row_at<T>(op[{index}], r, c0)")
            refs.append(f"    {'T' if is_out else 'const T'}& {name} = _{name}[_j];")
            value = "0.0"
        checks.append(f"  if ((rc = flmn_cpu::check_operand({name}, {value}, "
                      f"{str(is_out).lower()}, {str(row).lower()}, kind, rows, cols, "
                      f"&op[{index}]))) return {index} * 16 + rc;")
    return ELEMENTWISE_ENTRY.format(
        name=spec.name, col_params=", ".join(col_params), refs="\n".join(refs), body=spec.body,
        chunk=CHUNK, parallel_min=PARALLEL_MIN, col_args=", ".join(col_args),
        c_params=", ".join(c_params), first=params[first][0], first_index=first,
        n_ops=len(params), checks="\n".join(checks))


def cpp_source(raw_source=None):
    """The one C++ translation unit: PRELUDE, step_kernels.SOURCE (or `raw_source`, a test's
    mutated copy) unchanged, the elementwise bodies in their loops, the entry points."""
    source = step_kernels.SOURCE if raw_source is None else raw_source
    return (PRELUDE + source + RUNTIME
            + "".join(_raw_entry(spec) for spec in step_kernels.SPECS)
            + "".join(_elementwise_entry(spec) for spec in ELEMENTWISE))


# ------------------------------------------------------------------------------ the compiler

def find_compiler():
    """The C++ compiler command: `CXX` (split like a shell word list), else g++ or c++ on PATH.
    Raises CpuKernelError when there is none."""
    cxx = os.environ.get("CXX")
    if cxx:
        words = shlex.split(cxx)
        path = shutil.which(words[0]) if words else None
        if path is None:
            raise CpuKernelError(f"CXX={cxx!r} is not an executable on PATH: the CPU kernels need "
                                 f"a C++ compiler (install g++, or set CXX)")
        return (path, *words[1:])
    for name in ("g++", "c++"):
        path = shutil.which(name)
        if path:
            return (path,)
    raise CpuKernelError("no C++ compiler found (neither CXX nor g++ or c++ on PATH): the CPU "
                         "kernels need one (install g++, or set CXX)")


@functools.cache
def compiler_version(compiler):
    """The first line of `compiler --version` (part of the cache key)."""
    try:
        proc = subprocess.run([*compiler, "--version"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise CpuKernelError(f"the C++ compiler {compiler[0]} does not run "
                             f"({type(e).__name__}: {e})") from None
    if proc.returncode != 0:
        raise CpuKernelError(f"the C++ compiler {compiler[0]} does not run: "
                             f"{_first_error(proc.stderr or proc.stdout)}")
    return (proc.stdout.strip().splitlines() or [""])[0]


def is_gcc(compiler):
    version = compiler_version(compiler)
    return "clang" not in version.lower() and ("g++" in version or "gcc" in version.lower()
                                               or "free software foundation" in version.lower())


def flags(compiler, reassociate=True):
    """The compile flags: BASE_FLAGS, REASSOCIATE_FLAGS when asked, GCC_FLAGS for GCC."""
    gcc = is_gcc(compiler)
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return (*BASE_FLAGS, *(REASSOCIATE_FLAGS if reassociate else ()), *(GCC_FLAGS if gcc else ()),
            *(X86_GCC_FLAGS if gcc and x86 else ()))


def cpu_fingerprint():
    """What -march=native depends on: the CPU's model and feature flags (Linux), else the
    platform's description."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines()
                 if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        if lines:
            return "\n".join(sorted(set(lines)))
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {platform.platform()}"


def cache_dir():
    """FLMN_KERNEL_CACHE, else $XDG_CACHE_HOME/flmn-np/kernels, else ~/.cache/flmn-np/kernels."""
    if os.environ.get("FLMN_KERNEL_CACHE"):
        return Path(os.environ["FLMN_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flmn-np" / "kernels"


def _first_error(text):
    """The compiler's first error line (else its first line), for a one-line message."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line
    return lines[0] if lines else "(no message)"


# --------------------------------------------------------------------------------- the build

class Library(NamedTuple):
    """A built and loaded CPU kernel library."""
    cdll: object          # the ctypes.CDLL
    path: Path            # the cached shared library
    key: str              # the sha256 it is cached under
    compiled: bool        # True when this call compiled it, False when it came from the cache
    seconds: float        # compile time (0 when loaded from the cache)
    flags: tuple
    compiler: tuple
    libmvec: bool         # tanh and exp vectorized through glibc's libmvec


def build(compiler=None, *, reassociate=True, directory=None, raw_source=None):
    """Build (or load from the cache) the library of every CPU kernel, float and double.

    compiler: a command tuple (default find_compiler()); reassociate: REASSOCIATE_FLAGS on;
    directory: the cache folder (default cache_dir()); raw_source: a replacement for
    step_kernels.SOURCE (tests). Returns a Library; raises CpuKernelError in one line.
    """
    compiler = tuple(compiler) if compiler else find_compiler()
    if shutil.which(compiler[0]) is None:
        raise CpuKernelError(f"the C++ compiler {compiler[0]!r} is not an executable: the CPU "
                             f"kernels need one (install g++, or set CXX)")
    source = cpp_source(raw_source)
    build_flags = flags(compiler, reassociate)
    key = hashlib.sha256("\0".join([f"format {FORMAT}", source, *compiler,
                                    compiler_version(compiler), *build_flags,
                                    cpu_fingerprint()]).encode()).hexdigest()
    source += f'\nextern "C" const char* flmn_cpu_key() {{ return "{key}"; }}\n'
    folder = Path(directory) if directory is not None else cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CpuKernelError(f"cannot create the kernel cache {folder} ({e.strerror}); set "
                             f"FLMN_KERNEL_CACHE to a writable folder") from None
    path = folder / f"flmn_cpu_kernels_{key[:24]}.so"
    compiled, seconds = False, 0.0
    if not path.is_file():
        seconds = _compile(compiler, build_flags, source, path)
        compiled = True
    try:
        cdll = _load(path, key)
    except CpuKernelError:
        if compiled:
            raise
        seconds = _compile(compiler, build_flags, source, path)   # a damaged cache file
        compiled, cdll = True, _load(path, key)
    return Library(cdll, path, key, compiled, seconds, build_flags, compiler,
                   bool(cdll.flmn_cpu_libmvec()))


def _compile(compiler, build_flags, source, path):
    """Compile `source` into `path` through temporary files of its folder; returns seconds."""
    fd, tmp_src = tempfile.mkstemp(prefix=path.stem + ".", suffix=".cpp", dir=path.parent)
    tmp_lib = tmp_src[:-len(".cpp")] + ".so.tmp"
    try:
        with os.fdopen(fd, "w") as f:
            f.write(source)
        start = time.perf_counter()
        try:
            proc = subprocess.run([*compiler, *build_flags, "-o", tmp_lib, tmp_src],
                                  capture_output=True, text=True)
        except OSError as e:
            raise CpuKernelError(f"the C++ compiler {compiler[0]} does not run "
                                 f"({e.strerror})") from None
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.isfile(tmp_lib):
            raise CpuKernelError(f"the CPU kernels do not build with {compiler[0]}: "
                                 f"{_first_error(proc.stderr or proc.stdout)}")
        os.replace(tmp_src, path.with_suffix(".cpp"))       # kept beside it, for reading
        os.replace(tmp_lib, path)
        return seconds
    finally:
        for tmp in (tmp_src, tmp_lib):
            if os.path.exists(tmp):
                os.unlink(tmp)


def _load(path, key):
    """ctypes.CDLL of a built library, checked to be the one for `key` and to read arrays
    right."""
    # Idle OpenMP threads sleep rather than spin (unless the user says otherwise): a spinning
    # thread takes the core a multi-threaded BLAS product needs (measured at B = 16 on two
    # cores: ~850 ms per training step spinning against ~50 ms passive). libgomp reads this
    # when it loads, with the library below.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    try:
        cdll = ctypes.CDLL(str(path))
        cdll.flmn_cpu_key.restype = ctypes.c_char_p
        found = cdll.flmn_cpu_key().decode()
    except (OSError, AttributeError) as e:
        raise CpuKernelError(f"the CPU kernel library {path} does not load ({e})") from None
    if found != key:
        raise CpuKernelError(f"the CPU kernel library {path} is not the one for this source "
                             f"(key {found[:12]}, want {key[:12]})")
    cdll.flmn_cpu_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_char]
    cdll.flmn_cpu_init.restype = None
    cdll.flmn_cpu_init(id(np.ndarray), np.dtype(np.float32).num, np.dtype(np.float64).num,
                       b">" if sys.byteorder == "little" else b"<")
    cdll.flmn_cpu_probe.argtypes = [ctypes.c_void_p, ctypes.c_int]
    cdll.flmn_cpu_probe.restype = ctypes.c_int64
    cdll.flmn_cpu_libmvec.restype = ctypes.c_int
    _self_check(cdll)
    return cdll


def _self_check(cdll):
    """What the C side reads from arrays (through their object address) is what NumPy says."""
    base = np.zeros((6, 10), np.float64)
    readonly = np.ones(5, np.float32)
    readonly.flags.writeable = False
    cases = [base, base[1:, 2:7], base[::2], base.T, readonly, np.zeros((3, 4, 2), np.float32),
             np.zeros(7, np.int32), np.zeros((2, 3), np.dtype(">f8")), np.zeros(())[()]]
    for a in cases:
        probe = functools.partial(cdll.flmn_cpu_probe, id(a))
        if not isinstance(a, np.ndarray):
            ok = probe(6) == 0
        else:
            kind = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}.get(a.dtype, -1)
            flags_ = ((1 if a.flags.c_contiguous else 0) | (0x100 if a.flags.aligned else 0)
                      | (0x400 if a.flags.writeable else 0))
            ok = (probe(6) == 1 and probe(0) == a.__array_interface__["data"][0]
                  and probe(1) == a.ndim and (a.ndim == 0 or (probe(2) == a.shape[0]
                                                              and probe(3) == a.strides[0]))
                  and probe(4) == flags_ and probe(5) == kind)
        if not ok:
            raise CpuKernelError(f"this Python ({platform.python_implementation()} "
                                 f"{platform.python_version()}, NumPy {np.__version__}) lays "
                                 f"out arrays otherwise than the CPU kernels read them")


# ------------------------------------------------------------------------------ the launchers

def _default_threads():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        n = 0
    return n if n >= 1 else (os.cpu_count() or 1)


_THREADS = [_default_threads()]


def _after_fork_in_child():
    # GNU OpenMP's thread pool does not survive fork(): a child that starts a parallel region
    # after its parent ran one hangs. A forked child runs the kernels on its one thread.
    _THREADS[0] = 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """The number of threads the CPU kernels spread their work over (default OMP_NUM_THREADS,
    else os.cpu_count()). The results do not depend on it."""
    n = int(n)
    if n < 1:
        raise ValueError(f"the number of threads must be >= 1, got {n}")
    _THREADS[0] = n


def num_threads():
    return _THREADS[0]


@functools.cache
def library():
    """The default Library: build() with the default compiler, flags and cache, once."""
    return build()


class _Entry:
    """One kernel's entry point, called with the spec's arguments."""

    def __init__(self, cdll, spec):
        self.spec, self.fn = spec, getattr(cdll, f"flmn_cpu_{spec.name}")
        self.fn.restype = ctypes.c_int
        if isinstance(spec, step_kernels.RawSpec):
            kinds = step_kernels.param_kinds(spec)
            self.names = [name for _, name in kinds]
            self.fn.argtypes = [ctypes.c_int, ctypes.c_int64] + [
                {"array": ctypes.c_void_p, "int": ctypes.c_int, "T": ctypes.c_double}[kind]
                for kind, _ in kinds]
            self.arrays = tuple(i for i, (kind, _) in enumerate(kinds) if kind == "array")
        else:
            params = _elementwise_params(spec)
            self.names = [name for name, _, _ in params]
            self.n_inputs = sum(not is_out for _, is_out, _ in params)
            self.rows = tuple(row for _, _, row in params)
            argtypes = [ctypes.c_int]
            for _, _, row in params:
                argtypes += [ctypes.c_void_p, ctypes.c_double] if row else [ctypes.c_void_p]
            self.fn.argtypes = argtypes

    def raw(self, n_threads, args):
        if len(args) != len(self.names):
            raise TypeError(f"{self.spec.name}: {len(self.names)} arguments expected, got "
                            f"{len(args)}")
        values = list(args)
        for i in self.arrays:
            values[i] = id(values[i])
        rc = self.fn(_THREADS[0], n_threads, *values)
        if rc:
            self._fail(rc, args, lambda a: self.raw(n_threads, a))

    def elementwise(self, inputs, outputs):
        args = (*inputs, *outputs)
        if len(inputs) != self.n_inputs or len(args) != len(self.names):
            raise TypeError(f"{self.spec.name}: {self.n_inputs} inputs and "
                            f"{len(self.names) - self.n_inputs} outputs expected, got "
                            f"{len(inputs)} and {len(outputs)}")
        values = []
        for a, row in zip(args, self.rows):
            if not row:
                values.append(id(a))
            elif isinstance(a, np.ndarray):
                values += (id(a), 0.0)
            else:
                values += (None, float(a))
        rc = self.fn(_THREADS[0], *values)
        if rc:
            self._fail(rc, args,
                       lambda a: self.elementwise(a[:len(inputs)], a[len(inputs):]))

    def _fail(self, rc, args, retry):
        index, reason = divmod(rc, 16)
        if reason == 1 and any(type(a) is not np.ndarray and isinstance(a, np.ndarray)
                               for a in args):   # a subclass: its base-class view, same memory
            return retry(tuple(np.asarray(a) if isinstance(a, np.ndarray) else a for a in args))
        raise ValueError(f"{self.spec.name}: {self.names[index]} "
                         f"{REASONS.get(reason, f'is refused (code {reason})')}")


@functools.cache
def entry(spec, lib=None):
    """The _Entry of one spec in `lib` (default library())."""
    return _Entry((lib or library()).cdll, spec)


def launch_cpu(spec, n_threads, args):
    """Run a step_kernels spec on NumPy arrays: `n_threads` episodes, args in the order of
    spec.params (C-contiguous arrays of one float dtype, ints, numbers); outputs are written in
    place (step_kernels.launch_cupy's contract). Raises ValueError for an array it cannot take."""
    entry(spec).raw(n_threads, args)


def launch_cpu_elementwise(spec, inputs, outputs):
    """Run an elementwise spec (LSTM_FORWARD_SUM, LSTM_BACKWARD_SUM, ADAM) on NumPy arrays,
    outputs written in place (kernels.launch_cupy's contract for the calls kernels.py makes).
    Every operand is (rows, cols) with unit column stride and one row stride (leading axes
    collapse); ROW_PARAMS take a number or one value per row. Raises ValueError for a layout it
    does not take."""
    entry(spec).elementwise(inputs, outputs)


def launcher(lib):
    """(launch, launch_elementwise) running the kernels of another Library (tests, benchmarks)."""
    def launch(spec, n_threads, args):
        entry(spec, lib).raw(n_threads, args)

    def launch_elementwise(spec, inputs, outputs):
        entry(spec, lib).elementwise(inputs, outputs)
    return launch, launch_elementwise
