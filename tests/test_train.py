"""train.py, evaluation and plots end to end on real Omniglot with tiny models (a few seconds each).

One tiny run is trained once per module (`tiny_run`, run_helpers.py) and inspected by most tests;
the resume, Ctrl-C and error tests start their own processes where a real process boundary
matters.
"""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from run_helpers import (REPO, STEPS, assert_clean_error, kill_hard, params_of, run_cli,
                         start_paused, tiny_flags, tiny_run, train_in_process)  # noqa: F401

from flmn_np.core.backend import cupy_status
from flmn_np.runs.checkpoint import load_checkpoint, save_checkpoint
from flmn_np.runs.config import ConfigError, TrainConfig, build_parser, merge_for_resume, parse_args
from flmn_np.runs.metrics import column, csv_columns, read_metrics


# ---------------------------------------------------------------- config

def test_no_flags_means_paper_settings():
    cfg, given = parse_args([])
    assert given == {}
    assert (cfg.model, cfg.experiment, cfg.steps, cfg.batch_size) == ("flmn", 1, 100_000, 16)
    assert (cfg.classes, cfg.samples, cfg.hidden, cfg.slots, cfg.width) == (5, 10, 200, 64, 40)
    assert (cfg.optimizer, cfg.lr, cfg.gamma, cfg.split) == ("adam", 1e-3, 0.95, "paper")
    assert cfg.out == str(Path("runs") / "flmn-exp1-seed0")


def test_defaults_follow_model_and_optimizer():
    cfg, _ = parse_args(["--model", "mann", "--optimizer", "rmsprop", "--seed", "3",
                         "--experiment", "2"])
    assert (cfg.slots, cfg.lr) == (128, 1e-4)
    assert cfg.out == str(Path("runs") / "mann-exp2-seed3")


def test_every_option_has_a_type_or_choices():
    for action in build_parser()._actions:
        if action.option_strings and action.nargs != 0:   # skip --help and switches
            assert action.type is not None or action.choices is not None, action.option_strings


def test_resume_keeps_the_recorded_run_and_takes_new_run_length():
    recorded, _ = parse_args(["--model", "mann", "--hidden", "32", "--out", "r", "--steps", "10"])
    merged = merge_for_resume(recorded, {"resume": True, "out": "r", "steps": 20})
    assert (merged.model, merged.hidden, merged.steps, merged.resume) == ("mann", 32, 20, True)
    with pytest.raises(ConfigError, match=r"--hidden 32 \(asked: 64\)"):
        merge_for_resume(recorded, {"resume": True, "out": "r", "hidden": 64})


def test_config_round_trips_through_json():
    cfg, _ = parse_args(["--model", "mann", "--reads", "4"])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ---------------------------------------------------------------- a finished run

def test_config_json_records_the_run(tiny_run):
    record = json.loads((tiny_run / "config.json").read_text())
    cfg = record["config"]
    assert (cfg["model"], cfg["hidden"], cfg["slots"], cfg["steps"]) == ("flmn", 16, 8, STEPS)
    assert record["seed"] == 0 and record["backend"] == "numpy" and record["version"]
    assert record["start_time"] and record["model_config"]["n_slots"] == 8
    train_ids, test_ids = record["split"]["train_ids"], record["split"]["test_ids"]
    assert (len(train_ids), len(test_ids)) == (1209, 414)
    assert not set(train_ids) & set(test_ids)


def test_metrics_csv_rows(tiny_run):
    rows = read_metrics(tiny_run / "metrics.csv")
    assert list(rows[0]) == csv_columns(10)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [int(r["episodes"]) for r in rows] == [2 * s for s in range(1, STEPS + 1)]
    evaluated = [int(r["step"]) for r in rows if r["test_acc_1"]]
    assert evaluated == [2, 4, 6]
    for k in range(1, 11):
        acc = column(rows, f"train_acc_{k}")
        assert np.all((acc >= 0) & (acc <= 1))
    assert np.all(np.isfinite(column(rows, "loss")))
    assert np.all(np.diff(column(rows, "wall_time")) >= 0)


def test_checkpoint_contents(tiny_run):
    from flmn_np.core.models import param_shapes
    from flmn_np.runs.config import model_config
    with np.load(tiny_run / "checkpoint.npz", allow_pickle=False) as z:
        files = set(z.files)
        assert int(z["step"]) == STEPS
        saved = TrainConfig.from_dict(json.loads(str(z["config"])))
    shapes = param_shapes(model_config(saved))
    assert {f"param/{k}" for k in shapes} <= files
    assert "opt/t" in files and all(f"opt/m/{k}" in files for k in shapes)
    assert saved.hidden == 16 and saved.model == "flmn"


def test_evaluate_prints_table_and_writes_json(tiny_run, data_dir, capsys):
    from flmn_np.evaluate import main
    out = tiny_run / "eval.json"
    assert main([str(tiny_run), "--dataset", "omniglot", "--episodes", "6", "--json", str(out),
                 "--backend", "numpy", "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "6 episodes" in printed and "1st" in printed and "10th" in printed
    result = json.loads(out.read_text())
    assert (result["dataset"], result["episodes"], result["checkpoint_step"]) == ("omniglot", 6, 6)
    assert result["seed"] == 1234
    assert sorted(result["accuracy"], key=int) == [str(k) for k in range(1, 11)]
    # same seed and episode count as the run's final evaluation: the same numbers
    final = read_metrics(tiny_run / "metrics.csv")[-1]
    for k, acc in result["accuracy"].items():
        assert acc == pytest.approx(float(final[f"test_acc_{k}"]), abs=1e-4)


def test_finished_run_writes_final_evaluation_and_curves(tiny_run):
    """The run directory also holds the final evaluation (as evaluate writes it) and the plot."""
    result = json.loads((tiny_run / "eval_omniglot.json").read_text())
    assert (result["dataset"], result["checkpoint_step"], result["model"]) == ("omniglot", 6, "flmn")
    final = read_metrics(tiny_run / "metrics.csv")[-1]
    for k, acc in result["accuracy"].items():
        assert acc == pytest.approx(float(final[f"test_acc_{k}"]), abs=1e-4)
    assert (tiny_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_mnist_default_json_path(tiny_run, data_dir):
    from flmn_np.evaluate import main
    assert main([str(tiny_run), "--dataset", "mnist", "--episodes", "4", "--seed", "7",
                 "--backend", "numpy", "--data-dir", str(data_dir)]) == 0
    result = json.loads((tiny_run / "eval_mnist.json").read_text())
    assert (result["dataset"], result["episodes"], result["seed"]) == ("mnist", 4, 7)
    assert all(0.0 <= a <= 1.0 for a in result["accuracy"].values())


def test_plot_writes_png(tiny_run, tmp_path):
    from flmn_np.plot import main
    out = tmp_path / "curves.png"
    assert main([str(tiny_run), str(tiny_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_evaluate_and_plot_refuse_a_folder_without_a_run(tmp_path, capsys):
    from flmn_np.evaluate import main as evaluate_main
    from flmn_np.plot import main as plot_main
    assert evaluate_main([str(tmp_path), "--backend", "numpy"]) == 2
    assert plot_main([str(tmp_path), "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "no metrics.csv" in err
    assert not (tmp_path / "p.png").exists()


def test_resume_of_a_finished_run_does_nothing(tiny_run, capsys):
    before = (tiny_run / "metrics.csv").read_text()
    assert train_in_process(["--out", str(tiny_run), "--resume"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert (tiny_run / "metrics.csv").read_text() == before


# ---------------------------------------------------------------- kill, resume, Ctrl-C

def test_killed_and_resumed_run_equals_uninterrupted_run(tiny_run, data_dir, tmp_path):
    out = tmp_path / "killed"
    kill_hard(start_paused(tiny_flags(data_dir, out), step=5))     # kill -9 after step 5 ...
    assert load_checkpoint(out / "checkpoint.npz").step == 4        # ... its checkpoint is step 4
    assert int(read_metrics(out / "metrics.csv")[-1]["step"]) == 5  # and a row past it
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["resumes"][0]["step"] == 4

    resumed, uninterrupted = params_of(out), params_of(tiny_run)
    for k in uninterrupted:
        np.testing.assert_array_equal(resumed[k], uninterrupted[k], err_msg=k)
    rows, ref = read_metrics(out / "metrics.csv"), read_metrics(tiny_run / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in ref]        # no duplicated rows
    for name in csv_columns(10)[:-1]:                                    # all but wall_time
        assert [r[name] for r in rows] == [r[name] for r in ref], name


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(data_dir, tmp_path):
    out = tmp_path / "interrupted"
    argv = tiny_flags(data_dir, out, **{"--steps": 100_000, "--eval-episodes": 0})
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    step = load_checkpoint(out / "checkpoint.npz").step
    assert 2 <= step < 100_000
    assert int(read_metrics(out / "metrics.csv")[-1]["step"]) == step


# ---------------------------------------------------------------- --init-from

def test_init_from_starts_from_the_checkpoints_parameters(tiny_run, data_dir, tmp_path):
    """With an lr so small that a step moves no float32 parameter, a run started --init-from a
    checkpoint holds that checkpoint's parameters; its Adam starts afresh (t = 1 after a step);
    config.json names the checkpoint's step and sha256."""
    out = tmp_path / "init"
    argv = tiny_flags(data_dir, out, **{"--steps": 1, "--lr": 1e-30,
                                        "--init-from": tiny_run / "checkpoint.npz"})
    assert train_in_process(argv) == 0
    got, init = load_checkpoint(out / "checkpoint.npz"), load_checkpoint(tiny_run / "checkpoint.npz")
    for k, v in init.params.items():
        np.testing.assert_allclose(got.params[k], v, rtol=0, atol=1e-25, err_msg=k)
    assert int(got.opt_state["t"]) == 1
    record = json.loads((out / "config.json").read_text())
    assert record["init_from"]["step"] == STEPS and len(record["init_from"]["sha256"]) == 64
    fresh = tmp_path / "fresh"
    assert train_in_process(tiny_flags(data_dir, fresh, **{"--steps": 1, "--lr": 1e-30})) == 0
    assert np.abs(params_of(fresh)["W_lstm"] - init.params["W_lstm"]).max() > 1e-3


def test_init_from_a_float64_checkpoint_trains_in_float32(tiny_run, data_dir, tmp_path):
    init = load_checkpoint(tiny_run / "checkpoint.npz")
    wide = tmp_path / "float64.npz"
    save_checkpoint(wide, {k: v.astype(np.float64) for k, v in init.params.items()}, {},
                    init.step, init.config)
    out = tmp_path / "init"
    assert train_in_process(tiny_flags(data_dir, out, **{"--steps": 1, "--init-from": wide})) == 0
    assert {v.dtype for v in params_of(out).values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize("flags, fragment", [
    ({"--split-seed": 1}, "was trained with --split-seed 0 (this run: 1)"),
    ({"--val-classes": 10}, "was trained with --val-classes 0 (this run: 10)"),
    ({"--model": "mann"}, "was trained with --model flmn (this run: mann)"),
    ({"--hidden": 8}, "'W_lstm' has shape"),
    ({"--init-from": "missing.npz"}, "no checkpoint at missing.npz")])
def test_init_from_another_model_or_split_is_one_line_and_leaves_nothing(flags, fragment,
                                                                         tiny_run, data_dir,
                                                                         tmp_path, capsys):
    out = tmp_path / "init"
    argv = tiny_flags(data_dir, out, **{"--init-from": tiny_run / "checkpoint.npz", **flags})
    assert train_in_process(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err
    assert not out.exists()


# ---------------------------------------------------------------- errors: exit 2, one line

def test_unknown_flag_value_is_refused():
    proc = run_cli(["train.py", "--model", "lstm"])
    assert_clean_error(proc, "invalid choice")


def test_existing_run_dir_without_resume_is_refused(tiny_run, data_dir):
    proc = run_cli(["train.py", *tiny_flags(data_dir, tiny_run)])
    assert_clean_error(proc, "already holds a run", "--resume")


def test_resume_without_checkpoint_is_refused(tmp_path):
    proc = run_cli(["train.py", "--out", str(tmp_path / "empty"), "--resume"])
    assert_clean_error(proc, "--resume", "no config.json")


def test_resume_with_another_model_is_refused(tiny_run):
    proc = run_cli(["train.py", "--out", str(tiny_run), "--resume", "--model", "mann"])
    assert_clean_error(proc, "--model flmn (asked: mann)")


def test_checkpoint_of_another_shape_is_refused(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    record = json.loads((other / "config.json").read_text())
    record["config"]["hidden"] = 32                  # the checkpoint still has hidden = 16
    (other / "config.json").write_text(json.dumps(record))
    proc = run_cli(["train.py", "--out", str(other), "--resume"])
    assert_clean_error(proc, "from another run", "--hidden 16 (asked: 32)")


def test_missing_data_is_refused(tmp_path):
    read_only = tmp_path / "read-only"        # so that datasets.py does not try to download
    read_only.mkdir(mode=0o555)
    proc = run_cli(["train.py", "--out", str(tmp_path / "r"), "--data-dir", str(read_only / "none"),
                    "--backend", "numpy"])
    assert_clean_error(proc, "missing data file", "images_background.zip")


@pytest.mark.skipif(cupy_status()[0], reason="CuPy is usable here")
def test_cupy_without_gpu_is_refused(tmp_path):
    proc = run_cli(["train.py", "--out", str(tmp_path / "r"), "--backend", "cupy"])
    assert_clean_error(proc, "--backend cupy")


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    out = tmp_path / "nan"        # lr 1e38: step 1 still has a finite loss, step 2 has nan
    flags = {"--lr": 1e38, "--clip": 0, "--eval-every": 1, "--eval-episodes": 1}
    proc = run_cli(["train.py", *tiny_flags(data_dir, out, **flags)])
    assert_clean_error(proc, "not finite", "last good checkpoint (step 1)")
    assert load_checkpoint(out / "checkpoint.npz").step == 1
    assert all(np.all(np.isfinite(p)) for p in params_of(out).values())


# ---------------------------------------------------------------- backends

def test_short_run_on_each_backend_matches_numpy(backend, tiny_run, data_dir, tmp_path):
    out = tmp_path / backend
    argv = tiny_flags(data_dir, out, **{"--steps": 2, "--eval-episodes": 2,
                                        "--final-eval-episodes": 2, "--backend": backend})
    assert train_in_process(argv) == 0
    ours = read_metrics(out / "metrics.csv")
    ref = read_metrics(tiny_run / "metrics.csv")[:2]
    np.testing.assert_allclose(column(ours, "loss"), column(ref, "loss"), rtol=1e-4)
