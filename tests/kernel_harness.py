"""Checks of the fused kernels (flmn_np/core/kernels.py) that need no GPU.

- `launch_cpp`: a launcher for the kernel wrappers that runs a spec's body unchanged on NumPy
  arrays. The body is pasted into a C++ loop laid out as CuPy lays out an elementwise kernel (one
  iteration per element `i` of the broadcast shape, `typedef <dtype> T`, a const reference to
  each input and a reference to each output under its parameter name), built with g++ and called
  through ctypes.
- `cuda_source` / `nvrtc_compile`: the CUDA source CuPy generates for a launch (its own private
  generator, `cupy._core._kernel._get_elementwise_kernel_code`) compiled by NVRTC through CuPy's
  `compile_with_cache` for a given sm_XX, with the device query and the module load bypassed.
  Private API: checked against the CuPy pinned in requirements-kernels.txt.

With FLMN_KERNEL_CHECKS=required (set in .ci/run) a missing tool fails instead of skipping.
"""
import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

CUPY_PINNED = "14.2.0"          # requirements-kernels.txt
CTYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double"}


def require(ok, reason):
    """Skip with `reason` unless ok; fail instead when FLMN_KERNEL_CHECKS=required."""
    if ok:
        return
    if os.environ.get("FLMN_KERNEL_CHECKS") == "required":
        pytest.fail(f"{reason} (FLMN_KERNEL_CHECKS=required)")
    pytest.skip(reason)


def param_names(params):
    """'T a, T b' -> ['a', 'b'] (the kernels here use the generic type T only)."""
    names = []
    for p in params.split(","):
        ctype, name = p.split()
        assert ctype == "T", f"only T-typed parameters are supported here, got {p!r}"
        names.append(name)
    return names


# ----------------------------------------------------------------------------- C++ on the CPU

CPP_TEMPLATE = """\
// {name}: the kernel body run once per element, laid out as CuPy's elementwise kernel
// after its preamble (kernels.PREAMBLE).
#include <cmath>
#include <cstdint>
using std::tanh; using std::exp; using std::log; using std::sqrt; using std::fabs;
using std::min; using std::max;   // the math CuPy's preamble makes available to a body
#define __device__
{preamble}
typedef {ctype} T;

extern "C" void {name}(int64_t size, int ndim, const int64_t* shape,
                       char* const* data, const int64_t* strides /* nargs x ndim, bytes */) {{
  for (int64_t i = 0; i < size; ++i) {{                 // CUPY_FOR(i, _ind.size())
    int64_t _offset[{nargs}] = {{0}};                    // _ind.set(i): the element's offsets
    int64_t _rest = i;
    for (int d = ndim - 1; d >= 0; --d) {{
      const int64_t k = _rest % shape[d];
      _rest /= shape[d];
      for (int a = 0; a < {nargs}; ++a) _offset[a] += k * strides[a * ndim + d];
    }}
{refs}
{body}
  }}
}}
"""


def cpp_source(spec, ctype):
    """The C++ translation unit for `spec` with T = ctype; the body is pasted unchanged."""
    ins, outs = param_names(spec.in_params), param_names(spec.out_params)
    refs = [f"    const T &{n} = *reinterpret_cast<const T*>(data[{a}] + _offset[{a}]);"
            for a, n in enumerate(ins)]
    refs += [f"    T &{n} = *reinterpret_cast<T*>(data[{a}] + _offset[{a}]);"
             for a, n in enumerate(outs, start=len(ins))]
    from flmn_np.core.kernels import PREAMBLE
    return CPP_TEMPLATE.format(name=spec.name, ctype=ctype, nargs=len(ins) + len(outs),
                               refs="\n".join(refs), body=spec.body, preamble=PREAMBLE)


@functools.cache
def _build_dir():
    return Path(tempfile.mkdtemp(prefix="flmn_kernels_"))


BUILD_SECONDS = {}    # source hash -> g++ seconds, for the report


@functools.cache
def build_cpp(source):
    """Compile a C++ source into a shared library with g++; returns the ctypes CDLL.
    Raises RuntimeError with g++'s messages when it does not build."""
    gxx = shutil.which("g++")
    require(gxx is not None, "g++ is not installed: the CPU run of the kernel bodies needs it")
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    src, lib = _build_dir() / f"k_{digest}.cpp", _build_dir() / f"k_{digest}.so"
    src.write_text(source)
    start = time.perf_counter()
    proc = subprocess.run([gxx, "-O2", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC",
                           "-o", str(lib), str(src)], capture_output=True, text=True)
    BUILD_SECONDS[digest] = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"g++ could not build the kernel:\n{proc.stderr}")
    return ctypes.CDLL(str(lib))


def launch_cpp(spec, inputs, outputs):
    """kernels.launch_cupy's contract on NumPy arrays: broadcast the inputs, write the outputs
    (which must have the broadcast shape, as CuPy requires) in place."""
    arrays = (*inputs, *outputs)
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise TypeError(f"{spec.name}: every argument must have one dtype T, got {dtypes}")
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    for o in outputs:
        if o.shape != shape:
            raise ValueError(f"{spec.name}: output shape {o.shape} != broadcast shape {shape}")
    views = [np.broadcast_to(a, shape) for a in inputs] + list(outputs)
    lib = build_cpp(cpp_source(spec, CTYPES[dtypes.pop()]))
    ndim = max(len(shape), 1)
    shape_c = (ctypes.c_int64 * ndim)(*(shape or (1,)))
    data = (ctypes.c_void_p * len(views))(*(v.ctypes.data for v in views))
    strides = (ctypes.c_int64 * (len(views) * ndim))(
        *(s for v in views for s in (v.strides or (0,))))
    getattr(lib, spec.name)(ctypes.c_int64(int(np.prod(shape))), ctypes.c_int(ndim), shape_c,
                            data, strides)


# ----------------------------------------------------------------------------- CUDA, offline

def import_cupy():
    """CuPy at the pinned version (skips, or fails under FLMN_KERNEL_CHECKS=required)."""
    try:
        import cupy
    except Exception as e:
        require(False, f"CuPy does not import ({e}); pip install -r requirements-kernels.txt")
    require(cupy.__version__ == CUPY_PINNED,
            f"the offline compile uses CuPy {CUPY_PINNED}'s private API, found {cupy.__version__}")
    return cupy


def recorded_launches(wrapper, *args):
    """[(spec, inputs, outputs)] that a kernel wrapper hands its launcher for these arguments."""
    calls = []
    wrapper(*args, launch=lambda spec, inputs, outputs: calls.append((spec, inputs, outputs)))
    return calls


def cuda_source(spec, inputs, outputs):
    """The CUDA source CuPy 14.2 generates when ElementwiseKernel(spec) is called on arrays of
    these dtypes, shapes and layouts (NumPy stand-ins, broadcast as CuPy broadcasts them)."""
    cupy = import_cupy()
    from cupy._core import _carray, _kernel
    from flmn_np.core.kernels import cupy_kernel
    kernel = cupy_kernel(spec)
    _, _, type_map = kernel._decide_params_type(tuple(a.dtype for a in inputs),
                                                tuple(a.dtype for a in outputs))
    shape = np.broadcast_shapes(*(a.shape for a in (*inputs, *outputs)))
    views = [np.broadcast_to(a, shape) for a in inputs] + list(outputs)
    ndarray, indexer = 1, 2          # cupy._core._kernel._ArgKind
    arginfos = tuple(_kernel._ArgInfo(ndarray, cupy.ndarray, v.dtype, len(shape),
                                      v.flags.c_contiguous, True) for v in views)
    arginfos += (_kernel._ArgInfo(indexer, _carray.Indexer, None, len(shape), True, True),)
    return _kernel._get_elementwise_kernel_code(arginfos, type_map, kernel.params,
                                                kernel.operation, kernel.name, kernel.preamble)


@contextlib.contextmanager
def _offline_compiler():
    """CuPy's compile path without a device: the arch comes from the caller instead of the
    device query, the cubin is kept instead of loaded, and nothing is read from the disk cache."""
    from cupy.cuda import compiler, function

    class CubinOnly(function.Module):
        cubin = None

        def load(self, cubin):
            self.cubin = cubin

    saved = compiler._get_arch_for_options_for_nvrtc, compiler.function
    saved_env = os.environ.get("CUPY_CACHE_IN_MEMORY")
    compiler._get_arch_for_options_for_nvrtc = lambda arch=None: (f"-arch=sm_{arch}", "cubin")
    compiler.function = types.SimpleNamespace(Module=CubinOnly, LinkState=function.LinkState)
    os.environ["CUPY_CACHE_IN_MEMORY"] = "1"
    try:
        yield
    finally:
        compiler._get_arch_for_options_for_nvrtc, compiler.function = saved
        if saved_env is None:
            del os.environ["CUPY_CACHE_IN_MEMORY"]
        else:
            os.environ["CUPY_CACHE_IN_MEMORY"] = saved_env


def nvrtc_compile(code, arch):
    """Compile CuPy-generated source for sm_<arch> through `cupy._core.core.compile_with_cache`
    (CuPy's include paths and options). Returns (cubin bytes, seconds); raises
    cupy.cuda.compiler.CompileException with NVRTC's log when it does not compile."""
    import_cupy()
    from cupy._core import core
    with _offline_compiler():
        start = time.perf_counter()
        module = core.compile_with_cache(code, (), arch=arch)
        return module.cubin, time.perf_counter() - start


# ------------------------------------------------- the memory-step kernels (step_kernels.py)

RAW_CPP_HEAD = """\
// step_kernels.SOURCE run on the CPU: the CUDA built-ins it uses, defined for one thread at a
// time; the launch below loops over every (block, thread) of the grid in order.
#include <cmath>
#include <cstdint>
using std::tanh; using std::exp; using std::log; using std::sqrt; using std::fabs;
#define __global__
#define __device__
struct dim3_ { unsigned int x, y, z; };
static dim3_ blockIdx, blockDim, threadIdx;
"""

RAW_CPP_LAUNCH = """
extern "C" void launch_{name}(int64_t n_threads, void* const* args) {{
  typedef {ctype} T;
  blockDim.x = {threads};
  for (int64_t b = 0; b * {threads} < n_threads; ++b)
    for (unsigned int t = 0; t < {threads}; ++t) {{
      blockIdx.x = (unsigned int)b;
      threadIdx.x = t;
      {name}<T>({args});
    }}
}}
"""


def raw_cpp_source(spec, ctype, source=None):
    """C++ that runs one kernel of `source` (step_kernels.SOURCE, pasted unchanged) for T = ctype
    over a whole grid; its arguments come as an array of pointers to their values."""
    from flmn_np.core import step_kernels
    casts = {"array": "(T*)args[{a}]", "int": "*(const int*)args[{a}]", "T": "*(const T*)args[{a}]"}
    args = ", ".join(casts[kind].format(a=a)
                     for a, (kind, _) in enumerate(step_kernels.param_kinds(spec)))
    return (RAW_CPP_HEAD + (step_kernels.SOURCE if source is None else source)
            + RAW_CPP_LAUNCH.format(name=spec.name, ctype=ctype, args=args,
                                    threads=step_kernels.THREADS_PER_BLOCK))


def raw_launcher(source=None):
    """A launcher for step_kernels' wrappers (step_kernels.launch_cupy's contract) that runs the
    kernel of `source` (default step_kernels.SOURCE; a test passes a mutated copy) on NumPy
    arrays with g++. Every array must be C-contiguous and of one dtype: it is written in place."""
    from flmn_np.core import step_kernels

    def launch(spec, n_threads, args):
        kinds = step_kernels.param_kinds(spec)
        arrays = [a for (kind, _), a in zip(kinds, args, strict=True) if kind == "array"]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise TypeError(f"{spec.name}: every array must have one dtype T, got {dtypes}")
        dtype = dtypes.pop()
        values = []
        for (kind, name), a in zip(kinds, args):
            if kind == "array":
                if not a.flags.c_contiguous:
                    raise ValueError(f"{spec.name}: {name} is not C-contiguous")
                values.append(a)
            else:
                values.append(np.array(a, dtype=np.int32 if kind == "int" else dtype))
        lib = build_cpp(raw_cpp_source(spec, CTYPES[dtype], source))
        pointers = (ctypes.c_void_p * len(values))(*(v.ctypes.data for v in values))
        getattr(lib, f"launch_{spec.name}")(ctypes.c_int64(n_threads), pointers)
    return launch


launch_raw_cpp = raw_launcher()


def nvrtc_compile_module(source, name_expressions, options, arch):
    """Compile a RawModule source for sm_<arch> by the call `cupy.RawModule(code=source,
    options=options, name_expressions=...)` makes at its first use: its `_get_raw_module`
    (memoized per device, so not callable without one) calls
    `cupy._core.core.compile_with_cache(code, options, prepend_cupy_headers=False, backend=...,
    translate_cucomplex=False, enable_cooperative_groups=..., name_expressions=..., jitify=False)`;
    the arguments are read off a RawModule built here (construction touches no device).
    Returns (cubin bytes, seconds); raises CompileException."""
    cupy = import_cupy()
    from cupy._core import core
    module = cupy.RawModule(code=source, options=options, name_expressions=name_expressions)
    with _offline_compiler():
        start = time.perf_counter()
        compiled = core.compile_with_cache(
            module.code, module.options, arch=arch, prepend_cupy_headers=False,
            backend=module.backend, translate_cucomplex=False,
            enable_cooperative_groups=module.enable_cooperative_groups,
            name_expressions=module.name_expressions, log_stream=None, jitify=False)
        return compiled.cubin, time.perf_counter() - start


# ------------------------------------------------------ the 'step' level, whole, on the CPU

def step_level_on_cpu(monkeypatch):
    """NumPy arrays at CuPy's 'step' level (levels._held, restored by monkeypatch), every kernel
    run by g++ from its source; returns the set of kernel names launched, filled as they run."""
    from flmn_np.core import levels
    launched = set()

    def cpp_kernel(spec):
        n_in = len(spec.in_params.split(","))

        def run(*arrays):
            launched.add(spec.name)
            launch_cpp(spec, arrays[:n_in], arrays[n_in:])
        return run

    def raw_function(spec, dtype):
        def run(n_threads, args):
            launched.add(spec.name)
            launch_raw_cpp(spec, n_threads, args)
        return run

    monkeypatch.setitem(levels._held, "numpy", levels.Level(
        "step", elementwise_ops=True, launch=lambda spec, ins, outs: cpp_kernel(spec)(*ins, *outs),
        launch_raw=lambda spec, n_threads, args: raw_function(spec, None)(n_threads, args)))
    return launched
