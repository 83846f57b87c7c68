"""flmn_np's hand-derived FLMN gradients against PyTorch autograd on an independent
implementation of docs/model.md (benchmarks/torch_flmn.py). PyTorch is not a requirement of
flmn-np: skipped where it is not installed."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_flmn  # noqa: E402


@pytest.mark.parametrize("cosine_eps", ["product", "inside"])
def test_autograd_matches_hand_derived_gradients(capsys, cosine_eps):
    assert torch_flmn.check(seed=3, cosine_eps=cosine_eps)
    assert "worst" in capsys.readouterr().out
