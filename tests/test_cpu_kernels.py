"""The step level's kernels built for the CPU (flmn_np/core/cpu_kernels.py) against the plain xp
code, and the build around them.

- semantics: the memory-step kernels of step_kernels.SOURCE, built as a product (-O3, native,
  reassociating, OpenMP) and called through cpu_kernels.launch_cpu by step_kernels' own wrappers,
  match flmn.py / mann.py forward and backward (tests/test_step_kernels.py's step_case: saturating
  heads, empty slots, a zero key) for FLMN and MANN R = 1..4, both cosine epsilon placements, the
  key as add vector, E not a multiple of 64 and stacked leading axes; the LSTM cells and Adam
  through launch_cpu_elementwise match lstm.py and optim.Adam's formulas, a strided h_rh view
  and one learning rate per row included. float64 within 1e-12 and float32 within 2e-6 of each
  output's largest entry (float32 measures ~3e-7 here);
- determinism: bit-identical between 1 and 2 threads, and whatever the arrays' alignment;
  NaN and infinity propagate as in the xp code (no finite-math);
- arguments: a layout a kernel does not take is refused (ValueError naming the parameter), an
  ndarray subclass is taken as its base-class view;
- the build: a second build loads the cached library without compiling, a damaged cache file
  is rebuilt, two processes building at once both get a complete library, a missing compiler or
  a source that does not build is one line (CpuKernelError, a FlmnError); a forked child runs.

The library is built once per test module into a temporary cache (FLMN_KERNEL_CACHE, when set, is
used instead, so that repeated runs load it); the build tests use a stub source (every kernel an
empty body) that compiles in a second or two. Without a C++ compiler the tests skip, or fail
under FLMN_KERNEL_CHECKS=required.
"""
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flmn_np.core import cpu_kernels, kernels, lstm, step_kernels
from flmn_np.core.addressing import COSINE_EPS
from flmn_np.errors import FlmnError

from kernel_harness import require
from test_step_kernels import errors, kernel_step, step_case, worst, xp_step

TOL = {np.float64: 1e-12, np.float32: 2e-6}
ROOT = Path(__file__).resolve().parents[1]
CASES = [("flmn", 1, "product"), ("flmn", 1, "inside"), ("mann", 1, "product"),
         ("mann", 1, "inside"), ("mann", 2, "product"), ("mann", 3, "inside"),
         ("mann", 4, "product"), ("mann", 4, "inside")]


def stub_source():
    """step_kernels.SOURCE's kernels with empty bodies: the same entry points, a fast build."""
    return kernels.PREAMBLE + "".join(
        f"template <typename T>\n__global__ void {spec.name}({spec.params}) {{}}\n"
        for spec in step_kernels.SPECS)


def have_compiler():
    try:
        cpu_kernels.find_compiler()
        return True
    except cpu_kernels.CpuKernelError:
        return False


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The library of every kernel, built (or loaded) once."""
    require(have_compiler(), "no C++ compiler (g++): the CPU kernels need one")
    folder = os.environ.get("FLMN_KERNEL_CACHE") or tmp_path_factory.mktemp("kernel_cache")
    return cpu_kernels.build(directory=folder)


@pytest.fixture
def launch(lib):
    return cpu_kernels.launcher(lib)[0]


@pytest.fixture
def launch_ew(lib):
    return cpu_kernels.launcher(lib)[1]


@pytest.fixture
def threads():
    """Restores the thread count a test sets."""
    saved = cpu_kernels.num_threads()
    yield cpu_kernels.set_num_threads
    cpu_kernels.set_num_threads(saved)


# ----------------------------------------------------------------------- the memory steps

def assert_step_equal(cfg, case, got, want, dtype):
    """Every output within TOL of the xp code's, the least-used one-hots up to near-ties: where
    the two pick another slot, the xp code's usage of the slot picked here is within TOL of the
    one it picked (float32 usages of equal-looking slots differ in their last bit, the xp code's
    too; which of them is least used is then a matter of rounding)."""
    names = ["r", *type(case["mem"])._fields, "dheads", *type(case["dmem"])._fields]
    lu, u = names.index("w_lu"), names.index("w_u")
    w_u = want[u].reshape(want[u].shape[0], -1)
    lu_got, lu_want = (np.reshape(a, (w_u.shape[0], -1, w_u.shape[1])) for a in (got[lu], want[lu]))
    for e, j in zip(*np.nonzero((lu_got != lu_want).any(axis=-1))):
        picked, wanted = np.argmax(lu_got[e, j]), np.argmax(lu_want[e, j])
        assert abs(w_u[e, picked] - w_u[e, wanted]) <= TOL[dtype] * np.max(w_u[e]), (e, j)
    rest = [i for i in range(len(names)) if i != lu]
    assert worst([got[i] for i in rest], [want[i] for i in rest]) < TOL[dtype], errors(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("model,R,placement", CASES)
def test_memory_steps_equal_xp(model, R, placement, dtype, launch):
    cfg, case = step_case(model, R, placement, dtype)
    got, want = kernel_step(cfg, case, launch), xp_step(cfg, case)
    assert worst(got, want) < TOL[dtype], errors(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("model,R,mann_add,lead", [("flmn", 1, "separate", (67,)),
                                                   ("mann", 4, "separate", (67,)),
                                                   ("mann", 3, "key", (67,)),
                                                   ("flmn", 1, "separate", (5, 13)),
                                                   ("mann", 2, "key", (5, 13))])
def test_more_episodes_than_a_block_and_stacked_rows_equal_xp(model, R, mann_add, lead, dtype,
                                                              launch, threads):
    """E = 67 and 65 (not multiples of 64), on two threads; (5, 13): b_head one row per model."""
    threads(2)
    cfg, case = step_case(model, R, "product", dtype, lead=lead, mann_add=mann_add)
    assert_step_equal(cfg, case, kernel_step(cfg, case, launch), xp_step(cfg, case), dtype)


def test_nan_and_infinity_propagate_as_in_xp(launch):
    """A NaN in episode 2's key and episode 3's write gate at +inf (sigma = 1): every output
    the xp code makes NaN is NaN here too (no finite-math assumption lets the build drop it) and
    no other, except the least-used one-hot of the NaN episode (no slot is least used among
    NaNs); the other episodes equal the xp code's."""
    for model, R in (("flmn", 1), ("mann", 4)):
        cfg, case = step_case(model, R, "product", np.float64, lead=(4,))
        case["heads"][2, 3] = np.nan
        case["heads"][3, -1] = np.inf
        with np.errstate(invalid="ignore"):
            got, want = kernel_step(cfg, case, launch), xp_step(cfg, case)
        names = ["r", *type(case["mem"])._fields, "dheads", *type(case["dmem"])._fields]
        assert any(w is not None and np.isnan(w).any() for w in want)
        for name, g, w in zip(names, got, want):
            if w is None:
                continue
            g = np.reshape(g, w.shape)
            if name != "w_lu":
                assert np.array_equal(np.isnan(g), np.isnan(w)), name
            rest = [0, 1, 3]
            assert worst([g[rest]], [w[rest]]) < 1e-12, name


# ------------------------------------------------------------------- the elementwise kernels

def lstm_case(dtype, B=67, H=37, seed=0):
    """z_in, z_rec (B, 4H) with saturating entries, c_prev, dh_head, dh_next, dh_out, dc (B, H)."""
    rng = np.random.default_rng(seed)
    z_in, z_rec = 3.0 * rng.standard_normal((2, B, 4 * H))
    z_in[::2, ::3] = 35.0 * np.sign(z_in[::2, ::3])
    c_prev = 2.0 * rng.standard_normal((B, H))
    c_prev[1, :2] = (20.0, -20.0)
    rest = rng.standard_normal((4, B, H))
    return [a.astype(dtype) for a in (z_in, z_rec, c_prev, *rest)]


def lstm_both(dtype, launch_ew, B=67, H=37):
    """(fused through the CPU kernels, the xp code): h, c, the cache, dz, dc_prev."""
    z_in, z_rec, c_prev, dh_head, dh_next, dh_out, dc = lstm_case(dtype, B, H)
    rh = np.full((B, 40 + H), 7.0, dtype)                # h also lands in a strided row view
    h, c, cache = kernels.lstm_cell_forward_sum(z_in, z_rec, c_prev, rh[:, 40:], launch_ew)
    assert np.array_equal(rh[:, 40:], h) and np.all(rh[:, :40] == 7.0)
    dz, dc_prev = kernels.lstm_cell_backward_sum(dh_head, dh_next, dh_out, dc, cache,
                                                 np.empty_like(z_in), launch_ew)
    h_x, c_x, cache_x = lstm.lstm_cell_forward(z_in + z_rec, c_prev)
    dz_x, dc_prev_x = lstm.lstm_cell_backward(dh_head + dh_next + dh_out, dc, cache_x)
    return [h, c, *cache, dz, dc_prev], [h_x, c_x, *cache_x, dz_x, dc_prev_x]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_cells_equal_xp(dtype, launch_ew):
    got, want = lstm_both(dtype, launch_ew)
    assert worst(got, want) < TOL[dtype], errors(got, want)


def adam_case(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    p, m, g = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    v = (rng.random(shape) ** 2).astype(dtype)
    return p, m, v, g


def adam_both(dtype, shape, lr_t, launch_ew):
    """(the kernel's p, m, v, the xp formulas' p, m, v) after one Adam update."""
    p, m, v, g = adam_case(dtype, shape)
    want = [a.copy() for a in (p, m, v)]
    kernels.adam_update(p, m, v, g, lr_t, 0.9, 0.999, 1e-8, launch_ew)
    p_x, m_x, v_x = want
    m_x += (1.0 - 0.9) * (g - m_x)
    v_x += (1.0 - 0.999) * (g * g - v_x)
    p_x -= lr_t * m_x / (np.sqrt(v_x) + 1e-8)
    return [p, m, v], [p_x, m_x, v_x]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,lr_rows", [((9,), False), ((3, 10001), False), ((3, 10001), True),
                                           ((1, 5000), True)])
def test_adam_equals_xp(shape, lr_rows, dtype, launch_ew, threads):
    """Flat buffers of one model (n,) and of a stack (S, n) with one lr or one per row (S, 1);
    10001 columns: several column chunks per row, spread over two threads."""
    threads(2)
    lr_t = (np.linspace(1e-3, 3e-2, shape[0]).astype(dtype)[:, None] if lr_rows else 1e-3)
    got, want = adam_both(dtype, shape, lr_t, launch_ew)
    assert worst(got, want) < TOL[dtype], errors(got, want)


# ----------------------------------------------------------------------- determinism

def memory_step_outputs(model, R, launch, dtype=np.float32):
    cfg, case = step_case(model, R, "inside", dtype, lead=(67,))
    return kernel_step(cfg, case, launch)


def test_bit_identical_between_one_and_two_threads(launch, launch_ew, threads):
    runs = []
    for n in (1, 2):
        threads(n)
        out = []
        for model, R in (("flmn", 1), ("mann", 1), ("mann", 4)):
            out += memory_step_outputs(model, R, launch)
        out += lstm_both(np.float32, launch_ew, B=257, H=200)[0]
        out += adam_both(np.float32, (2, 300001), 1e-3, launch_ew)[0]
        runs.append(out)
    for a, b in zip(*runs):
        assert (a is None and b is None) or np.array_equal(a, b)


def shifted(a, shift):
    """A C-contiguous copy of a whose data starts `shift` elements past an aligned buffer."""
    buf = np.empty(a.size + 64, dtype=a.dtype)
    start = (-buf.ctypes.data) % 64 // a.itemsize + shift      # 64-byte aligned, then shifted
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 4)])
def test_bit_identical_whatever_the_alignment(model, R, launch):
    """The same launch on copies of every array at other offsets from a 64-byte boundary
    (no loop is peeled or versioned for alignment): the same bits."""
    cfg, case = step_case(model, R, "product", np.float32, lead=(9,))
    calls = []

    def record(spec, n, args):
        calls.append((spec, n, args))
        launch(spec, n, args)
    kernel_step(cfg, case, record)
    for spec, n, args in calls:
        results = []
        for shift in (0, 1, 3, 5):
            moved = [shifted(a, shift) if isinstance(a, np.ndarray) else a for a in args]
            launch(spec, n, moved)
            results.append([a for a, (kind, _) in zip(moved, step_kernels.param_kinds(spec))
                            if kind == "array"])
        for other in results[1:]:
            assert all(np.array_equal(x, y) for x, y in zip(results[0], other)), spec.name


# ----------------------------------------------------------------------- arguments

def recorded_forward(dtype=np.float64):
    cfg, case = step_case("flmn", 1, "product", dtype)
    calls = []
    step_kernels.flmn_step_forward(case["heads"], case["b_head"], case["mem"], cfg, COSINE_EPS,
                                   launch=lambda spec, n, args: calls.append((spec, n, args)))
    return calls[0]


def replaced(spec, args, name, value):
    names = [n for _, n in step_kernels.param_kinds(spec)]
    return tuple(value if n == name else a for n, a in zip(names, args))


def test_layouts_a_memory_step_does_not_take_are_refused(launch):
    spec, n, args = recorded_forward()
    heads = args[0]
    strided = np.repeat(heads, 2, axis=1)[:, ::2]
    readonly = np.empty_like(heads)
    readonly.flags.writeable = False
    for name, value, match in (("heads", strided, "heads is not C-contiguous"),
                               ("b_head", args[1].astype(np.float32), "b_head is not of the"),
                               ("heads", heads.tolist(), "heads is not a NumPy array"),
                               ("act", readonly, "act is read-only")):
        with pytest.raises(ValueError, match=match):
            launch(spec, n, replaced(spec, args, name, value))
    with pytest.raises(TypeError, match="arguments expected"):
        launch(spec, n, args[:-1])


def test_layouts_an_elementwise_kernel_does_not_take_are_refused(launch_ew):
    p, m, v, g = adam_case(np.float64, (3, 8))
    lr = np.float64(1e-3)
    scalars = (lr, np.float64(0.1), np.float64(1e-3), np.float64(1e-8))
    spec = kernels.ADAM
    for inputs, outputs, match in (
            ((g[:, ::2], *scalars), (p[:, ::2], m[:, ::2], v[:, ::2]), "last axis"),
            ((g[:2], *scalars), (p, m, v), "g has a shape"),
            ((g, g, *scalars[1:]), (p, m, v), "lr_t has a shape"),       # lr_t a full array
            ((g, *scalars), (p, m, v.astype(np.float32)), "v is not of the")):
        with pytest.raises(ValueError, match=match):
            launch_ew(spec, inputs, outputs)


def test_an_ndarray_subclass_is_taken_as_its_view(launch_ew):
    class Tagged(np.ndarray):
        pass
    got, want = adam_both(np.float64, (2, 7), 1e-3, launch_ew)
    p, m, v, g = (a.view(Tagged) for a in adam_case(np.float64, (2, 7)))
    kernels.adam_update(p, m, v, g, 1e-3, 0.9, 0.999, 1e-8, launch_ew)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip((p, m, v), got))


# ----------------------------------------------------------------------- the build

def test_flags_keep_nan_checks_and_reassociate(lib):
    assert not {"-ffast-math", "-ffinite-math-only", "-Ofast"} & set(lib.flags)
    assert set(cpu_kernels.REASSOCIATE_FLAGS) <= set(lib.flags)
    assert {"-O3", "-march=native", "-fopenmp"} <= set(lib.flags)


def test_a_second_build_loads_the_cache(lib):
    again = cpu_kernels.build(directory=lib.path.parent)
    assert not again.compiled and again.path == lib.path and again.key == lib.key


def test_the_key_follows_the_source_and_a_damaged_file_is_rebuilt(tmp_path):
    require(have_compiler(), "no C++ compiler (g++): the CPU kernels need one")
    first = cpu_kernels.build(directory=tmp_path, raw_source=stub_source())
    assert first.compiled
    other = cpu_kernels.build(directory=tmp_path, raw_source=stub_source() + "// changed\n")
    assert other.compiled and other.key != first.key and other.path != first.path
    # a truncated library under the name, in a folder this process has loaded nothing from
    # (a loaded library is never written over: a build renames a new file into place)
    damaged = tmp_path / "other"
    damaged.mkdir()
    (damaged / first.path.name).write_bytes(first.path.read_bytes()[:100])
    rebuilt = cpu_kernels.build(directory=damaged, raw_source=stub_source())
    assert rebuilt.compiled and rebuilt.path == damaged / first.path.name
    assert not cpu_kernels.build(directory=damaged, raw_source=stub_source()).compiled


BUILD_SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from flmn_np.core import cpu_kernels
    from test_cpu_kernels import stub_source
    lib = cpu_kernels.build(directory=sys.argv[1], raw_source=stub_source())
    print(lib.path.name, lib.compiled)
""")


def test_two_processes_building_at_once_both_get_a_complete_library(tmp_path):
    require(have_compiler(), "no C++ compiler (g++): the CPU kernels need one")
    script = BUILD_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    names = {out.split()[0] for out, _ in outs}
    assert len(names) == 1
    so = names.pop()                          # the library and its source, no temporary left
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([so, so[:-len(".so")] + ".cpp"])
    assert not cpu_kernels.build(directory=tmp_path, raw_source=stub_source()).compiled


def test_a_missing_compiler_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(cpu_kernels.CpuKernelError) as e:
        cpu_kernels.build(directory=tmp_path)
    assert isinstance(e.value, FlmnError) and "\n" not in str(e.value)
    assert "no-such-g++" in str(e.value) and "C++ compiler" in str(e.value)
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", str(tmp_path))                          # no g++, no c++
    with pytest.raises(cpu_kernels.CpuKernelError, match="no C\\+\\+ compiler found"):
        cpu_kernels.build(directory=tmp_path)


def test_a_source_that_does_not_build_is_one_line_with_the_compiler_error(tmp_path):
    require(have_compiler(), "no C++ compiler (g++): the CPU kernels need one")
    broken = stub_source().replace("{}", "{ int x = ; }", 1)
    with pytest.raises(cpu_kernels.CpuKernelError) as e:
        cpu_kernels.build(directory=tmp_path, raw_source=broken)
    message = str(e.value)
    assert "\n" not in message and "do not build" in message and "error" in message
    assert not list(tmp_path.iterdir()), "a failed build leaves no file"


def _child_run(queue):
    p, m, v, g = adam_case(np.float32, (2, 100000))
    kernels.adam_update(p, m, v, g, 1e-3, 0.9, 0.999, 1e-8, cpu_kernels.launch_cpu_elementwise)
    queue.put(float(p.sum()))


def test_a_forked_child_runs_the_kernels(lib, monkeypatch, threads):
    """GNU OpenMP's pool does not survive fork(): the child runs on one thread instead of
    hanging. The parent runs a parallel region first."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork() here")
    monkeypatch.setattr(cpu_kernels, "library", lambda: lib)
    cpu_kernels.entry.cache_clear()
    threads(2)
    try:
        queue = multiprocessing.get_context("fork").Queue()
        _child_run(queue)                                    # the parent, two threads
        parent = queue.get(timeout=10)
        child = multiprocessing.get_context("fork").Process(target=_child_run, args=(queue,))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hangs in the CPU kernels")
        assert queue.get(timeout=10) == parent
    finally:
        cpu_kernels.entry.cache_clear()
