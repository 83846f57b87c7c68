"""The memory-access figure: traces from a trained run, drawn to a PNG."""
import numpy as np

from flmn_np.memviz import main, trace_episode
from flmn_np.models import ModelConfig, init_params
from test_train import tiny_flags, train_in_process


def test_trace_weights_are_distributions():
    """Every step's read and write weights are distributions over the slots (the write
    weights interpolate two distributions [eq 6]); one prediction per step."""
    for model, slots in (("flmn", 8), ("mann", 9)):
        cfg = ModelConfig(model=model, input_size=12, hidden=8, slots=slots, width=4)
        params = init_params(cfg, 0, np)
        rng = np.random.default_rng(0)
        x, y = rng.random((1, 10, 12)).astype(np.float32), rng.integers(0, 5, (1, 10))
        reads, writes, preds = trace_episode(params, x, y, cfg)
        assert reads.shape == writes.shape == (10, slots) and preds.shape == (10,)
        np.testing.assert_allclose(reads.sum(1), 1, rtol=1e-5)
        np.testing.assert_allclose(writes[1:].sum(1), 1, rtol=1e-5)


def test_memviz_draws_flmn_and_mann(data_dir, tmp_path, capsys):
    runs = []
    for model in ("flmn", "mann"):
        out = tmp_path / model
        assert train_in_process(tiny_flags(data_dir, out, **{"--model": model, "--steps": 2})) == 0
        runs.append(str(out))
    png = tmp_path / "memory.png"
    assert main([*runs, "--out", str(png), "--data-dir", str(data_dir)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "FLMN" in printed and "MANN" in printed
