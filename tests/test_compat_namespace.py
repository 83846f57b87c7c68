"""The CuPy path goes through array-api-compat's namespace (backend.array_namespace). Without a
GPU, run the engine through array-api-compat's NumPy namespace, the same wrapper code, to check
that every call the engine makes exists there with the signature it uses."""
import importlib

import numpy as np
import pytest

compat_numpy = pytest.importorskip("array_api_compat.numpy")

from flmn_np.gradcheck import TINY, tiny_episode  # noqa: E402
from flmn_np.core.models import ModelConfig, loss_and_grads  # noqa: E402

MODULES = ["ops", "lstm", "addressing", "memory", "flmn", "mann", "models", "optim"]


@pytest.mark.parametrize("model,R", [("flmn", 1), ("mann", 1), ("mann", 4)])
def test_engine_through_array_api_compat(monkeypatch, model, R):
    for name in MODULES:
        module = importlib.import_module(f"flmn_np.core.{name}")
        if hasattr(module, "array_namespace"):
            monkeypatch.setattr(module, "array_namespace", lambda *arrays: compat_numpy)
    cfg = ModelConfig(model=model, reads=R, slots=6, **TINY)
    p, x, y = tiny_episode(cfg, seed=1)
    loss, logits, grads = loss_and_grads(p, x, y, cfg)
    monkeypatch.undo()
    ref_loss, ref_logits, ref_grads = loss_and_grads(p, x, y, cfg)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
    for k in p:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-10, atol=1e-14)
