"""The fused CuPy kernels against the plain xp code they replace (needs a GPU)."""
import numpy as np
import pytest

from flmn_np.core import kernels
from flmn_np.core import lstm
from flmn_np.core import memory
from flmn_np.core.backend import cupy_status, get_xp, to_numpy
from flmn_np.gradcheck import TINY, tiny_episode
from flmn_np.core.models import ModelConfig, loss_and_grads

usable, reason = cupy_status()
pytestmark = pytest.mark.skipif(not usable, reason=reason)


@pytest.fixture
def cp():
    return get_xp("cupy")


def _plain(monkeypatch):
    monkeypatch.setenv("FLMN_FUSED", "0")


def rand(cp, *shape, seed=0):
    return cp.asarray(np.random.default_rng(seed).standard_normal(shape))


def test_lstm_cell_fused_equals_xp(cp, monkeypatch):
    z, c_prev, dh, dc = rand(cp, 4, 20, seed=1), rand(cp, 4, 5, seed=2), rand(cp, 4, 5, seed=3), rand(cp, 4, 5, seed=4)
    assert kernels.fused(z)
    h_f, c_f, cache_f = lstm.lstm_cell_forward(z, c_prev)
    dz_f, dcp_f = lstm.lstm_cell_backward(dh, dc, cache_f)
    _plain(monkeypatch)
    h, c, cache = lstm.lstm_cell_forward(z, c_prev)
    dz, dcp = lstm.lstm_cell_backward(dh, dc, cache)
    for a, b in [(h_f, h), (c_f, c), (dz_f, dz), (dcp_f, dcp)] + list(zip(cache_f, cache)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-14)


def test_write_fused_equals_xp(cp, monkeypatch):
    M, w, a = rand(cp, 3, 6, 4, seed=1), rand(cp, 3, 1, 6, seed=2), rand(cp, 3, 1, 4, seed=3)
    erase = cp.asarray(np.eye(6)[[0, 2, 5]])
    M_f, _ = memory.write_forward(M, w, a, erase=erase)
    _plain(monkeypatch)
    M_x, _ = memory.write_forward(M, w, a, erase=erase)
    np.testing.assert_allclose(to_numpy(M_f), to_numpy(M_x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 1), ("mann", 4)])
def test_episode_fused_equals_numpy(cp, model, R):
    cfg = ModelConfig(model=model, reads=R, slots=6, **TINY)
    p, x, y = tiny_episode(cfg, seed=2)
    ref = loss_and_grads(p, x, y, cfg)
    out = loss_and_grads({k: cp.asarray(v) for k, v in p.items()}, cp.asarray(x), cp.asarray(y), cfg)
    np.testing.assert_allclose(to_numpy(out[1]), ref[1], rtol=1e-10, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(to_numpy(out[2][k]), ref[2][k], rtol=1e-8, atol=1e-12)
