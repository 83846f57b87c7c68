"""The memory-access figure (memviz) and the results tables (report)."""
import numpy as np

from flmn_np.memviz import main, same_class_lift, trace_episode
from flmn_np.core.models import ModelConfig, init_params
from run_helpers import tiny_flags, train_in_process


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


def test_same_class_lift():
    """Slot s written at step s; a reader that puts all its weight on same-class slots has
    lift (written / same-class) > 1, a uniform reader has lift 1."""
    y = np.array([0, 1, 0, 1, 0])
    writes = np.eye(5)
    uniform = np.full((5, 5), 0.2)
    assert same_class_lift(uniform, writes, y) == 1.0
    perfect = np.zeros((5, 5))
    perfect[2, 0] = perfect[3, 1] = 1.0
    perfect[4, [0, 2]] = 0.5
    # step 2: 1 same of 2 written -> lift 2; step 3: 1 of 3 -> 3; step 4: 2 of 4 -> 2
    assert same_class_lift(perfect, writes, y) == (2 + 3 + 2) / 3


def test_report_rows_from_evaluation_json(tmp_path, capsys):
    import json
    from flmn_np.report import main as report
    run = tmp_path / "flmn-x"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"batch_size": 16}}))
    (run / "eval_omniglot.json").write_text(json.dumps(
        {"checkpoint_step": 6250, "episodes": 1000, "accuracy": {str(k): k / 20 for k in range(1, 11)}}))
    assert report([str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run |") and "10th" in lines[0]
    assert lines[2] == "| flmn-x | 6,250 (100,000) | 1,000 | 5.0 | 10.0 | 15.0 | 20.0 | 25.0 | 50.0 |"
    assert report([str(tmp_path / "none")]) == 2


def test_report_best_reads_the_best_checkpoint_evaluation(tmp_path, capsys):
    import json
    from flmn_np.report import main as report
    run = tmp_path / "flmn-v"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"batch_size": 16}}))
    for name, step, acc in (("eval_omniglot.json", 9000, 0.5), ("eval_omniglot_best.json", 4000, 0.9)):
        (run / name).write_text(json.dumps(
            {"checkpoint_step": step, "episodes": 1000, "accuracy": {str(k): acc for k in range(1, 11)}}))
    assert report([str(run), "--best", "--instances", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "| flmn-v (best.npz) | 4,000 (64,000) | 1,000 | 90.0 |"
    (run / "eval_omniglot_best.json").unlink()
    assert report([str(run), "--best"]) == 2
    assert "--best" in capsys.readouterr().err
