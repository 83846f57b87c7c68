"""--val-classes / --patience / best.npz (validation.py) on real Omniglot with tiny models."""
import csv
import json

import numpy as np
import pytest
from run_helpers import (assert_clean_error, kill_hard, params_of, run_cli, start_paused,
                         tiny_flags, train_in_process)

from flmn_np.runs.checkpoint import load_checkpoint
from flmn_np.runs.config import TrainConfig, model_config
from flmn_np.data.episodes import EpisodeSource
from flmn_np.data.sources import omniglot_data
from flmn_np.data.splits import make_split
from flmn_np.evaluate import main as evaluate_main
from flmn_np.runs.evaluation import evaluate_params
from flmn_np.runs.validation import score, split_validation

VAL = {"--val-classes": 40, "--val-episodes": 6}


def read_validation(run_dir):
    with open(run_dir / "validation.csv", newline="") as f:
        return list(csv.DictReader(f))


def val_acc(row, samples=10):
    return np.array([float(row[f"val_acc_{k}"]) for k in range(1, samples + 1)])


@pytest.fixture(scope="module")
def val_run(tmp_path_factory, data_dir):
    """A finished tiny run with 40 validation classes, evaluated every 2 of 6 steps."""
    out = tmp_path_factory.mktemp("runs") / "val"
    assert train_in_process(tiny_flags(data_dir, out, **VAL)) == 0
    return out


def test_split_validation_takes_classes_out_of_training_only():
    train, test = make_split("paper", 0)
    kept, val = split_validation(train, 100, seed=0)
    assert (kept.size, val.size) == (train.size - 100, 100)
    assert set(kept) | set(val) == set(train)
    assert not set(kept) & set(val) and not set(val) & set(test)
    np.testing.assert_array_equal(split_validation(train, 100, seed=0)[1], val)   # seeded
    assert not np.array_equal(split_validation(train, 100, seed=1)[1], val)
    for bad in (0, train.size):
        with pytest.raises(ValueError, match="--val-classes"):
            split_validation(train, bad, seed=0)


def test_config_json_records_disjoint_validation_classes(val_run):
    split = json.loads((val_run / "config.json").read_text())["split"]
    train, val, test = (set(split[k]) for k in ("train_ids", "val_ids", "test_ids"))
    assert len(val) == 40 and len(train) == 1209 - 40 and len(test) == 414
    assert not train & val and not val & test and not train & test


def test_best_npz_holds_the_parameters_that_scored_best(val_run, data_dir):
    rows = read_validation(val_run)
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    scores = [score(val_acc(r)) for r in rows]
    best = json.loads((val_run / "best.json").read_text())
    assert best["step"] == int(rows[int(np.argmax(scores))]["step"])   # first of equal maxima
    assert best["score"] == pytest.approx(max(scores))
    ckpt = load_checkpoint(val_run / "best.npz")
    assert ckpt.step == best["step"]
    # re-scoring best.npz on the recorded validation classes gives its validation.csv row back
    record = json.loads((val_run / "config.json").read_text())
    cfg = TrainConfig.from_dict(record["config"])
    images, augment = omniglot_data(cfg, data_dir)
    source = EpisodeSource(images, np.asarray(record["split"]["val_ids"]), augment)
    acc, _ = evaluate_params(ckpt.params, model_config(cfg), source, cfg.val_episodes,
                             cfg.samples, cfg.eval_seed)
    row = rows[[int(r["step"]) for r in rows].index(best["step"])]
    np.testing.assert_allclose(acc, val_acc(row), atol=5e-5)


def test_final_and_best_checkpoints_are_both_evaluated_on_test_classes(val_run, capsys):
    final = json.loads((val_run / "eval_omniglot.json").read_text())
    best = json.loads((val_run / "eval_omniglot_best.json").read_text())
    assert final["checkpoint_step"] == 6
    assert best["checkpoint_step"] == json.loads((val_run / "best.json").read_text())["step"]
    assert evaluate_main([str(val_run), "--best", "--episodes", "6", "--backend", "numpy",
                          "--json", str(val_run / "again.json")]) == 0
    again = json.loads((val_run / "again.json").read_text())
    assert again["accuracy"] == best["accuracy"] and again["checkpoint_step"] == best["checkpoint_step"]


def test_patience_stops_at_the_first_point_past_it(data_dir, tmp_path):
    out = tmp_path / "patient"
    assert train_in_process(tiny_flags(data_dir, out, **VAL, **{
        "--steps": 200, "--eval-every": 1, "--patience": 2})) == 0
    rows = read_validation(out)
    scores = [score(val_acc(r)) for r in rows]
    best_at = int(np.argmax(scores))
    assert len(rows) == best_at + 1 + 2 < 200           # two points without improvement, then stop
    stop = int(rows[-1]["step"])
    assert load_checkpoint(out / "checkpoint.npz").step == stop
    assert json.loads((out / "eval_omniglot.json").read_text())["checkpoint_step"] == stop
    assert json.loads((out / "eval_omniglot.json").read_text())["episodes"] == 6   # final size
    assert (out / "eval_omniglot_best.json").is_file()


def test_killed_and_resumed_validation_run_equals_uninterrupted_run(val_run, data_dir, tmp_path):
    out = tmp_path / "killed"
    kill_hard(start_paused(tiny_flags(data_dir, out, **VAL), step=5))
    assert len(read_validation(out)) == 2                              # rows of steps 2, 4
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    assert read_validation(out) == read_validation(val_run)             # no duplicated rows
    assert (json.loads((out / "best.json").read_text())
            == json.loads((val_run / "best.json").read_text()))
    for name in ("best.npz", "checkpoint.npz"):
        resumed, ref = load_checkpoint(out / name).params, load_checkpoint(val_run / name).params
        for k in ref:
            np.testing.assert_array_equal(resumed[k], ref[k], err_msg=f"{name} {k}")
    assert params_of(out).keys() == params_of(val_run).keys()


def test_bad_validation_flags_are_refused(data_dir, tmp_path):
    proc = run_cli(["train.py", *tiny_flags(data_dir, tmp_path / "a", **{"--patience": 3})])
    assert_clean_error(proc, "--patience needs --val-classes")
    proc = run_cli(["train.py", *tiny_flags(data_dir, tmp_path / "b", **{"--val-classes": 5000})])
    assert_clean_error(proc, "--val-classes 5000")


def test_resume_cannot_change_the_validation_classes(val_run):
    proc = run_cli(["train.py", "--out", str(val_run), "--resume", "--val-classes", "7"])
    assert_clean_error(proc, "--val-classes 40 (asked: 7)")


def test_best_of_a_run_without_validation_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "plain"
    assert train_in_process(tiny_flags(data_dir, out, **{"--steps": 2})) == 0
    assert evaluate_main([str(out), "--best", "--backend", "numpy"]) == 2
    assert "no best.npz" in capsys.readouterr().err


def test_plot_shows_the_validation_curve_and_the_best_step(val_run):
    import matplotlib.pyplot as plt

    from flmn_np.runs.metrics import read_metrics
    from flmn_np.runs.curves import plot_accuracy
    fig, ax = plt.subplots()
    plot_accuracy(ax, read_metrics(val_run / "metrics.csv"), "val", val_run)
    lines = {line.get_label(): line for line in ax.get_lines()}
    rows = read_validation(val_run)
    np.testing.assert_allclose(lines["2nd, validation"].get_xdata(),
                               [2 * int(r["step"]) for r in rows])      # episodes, batch 2
    np.testing.assert_allclose(lines["2nd, validation"].get_ydata(),
                               [100 * float(r["val_acc_2"]) for r in rows])
    best = json.loads((val_run / "best.json").read_text())["step"]
    assert list(lines["best.npz"].get_xdata()) == [2 * best, 2 * best]
    plt.close(fig)
