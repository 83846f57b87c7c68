"""Evaluation's episode standard error, --target-se and the JSON it writes (runs/evaluation.py,
flmn_np/evaluate.py). The synthetic tests need no data; the command tests train one tiny run."""
import json

import numpy as np
import pytest

from flmn_np.core.backend import get_xp
from flmn_np.core.models import ModelConfig, init_params
from flmn_np.data.episodes import EpisodeSource
from flmn_np.runs import evaluation
from flmn_np.runs.evaluation import episode_se, evaluate_params, per_episode_counts
from run_helpers import tiny_run  # noqa: F401  (the fixture)


def test_per_episode_counts_and_the_standard_error_of_their_mean():
    rng = np.random.default_rng(0)
    B, C, S = 40, 3, 4
    y = np.stack([rng.permutation(np.repeat(np.arange(C), S)) for _ in range(B)])
    inst = np.zeros_like(y)
    for b in range(B):
        for c in range(C):
            inst[b, y[b] == c] = np.arange(S)
    logits = rng.normal(size=(B, C * S, C)).astype(np.float32)
    correct, total = per_episode_counts(logits, y, inst, S)
    assert correct.shape == total.shape == (B, S) and np.all(total == C)
    hit = logits.argmax(-1) == y
    for b in (0, 7):
        for k in range(S):
            assert correct[b, k] == hit[b][inst[b] == k].sum()
    sums = [correct.sum(0), total.sum(0), (correct ** 2).sum(0), (correct * total).sum(0),
            (total ** 2).sum(0)]
    se = episode_se(*sums, B)
    per_episode = correct / C                               # every episode has C at each k
    assert se == pytest.approx(per_episode.std(0, ddof=1) / np.sqrt(B))
    assert np.all(np.isnan(episode_se(*(v[:1] for v in sums), 1)))


def synthetic(classes=5, hidden=8):
    """A tiny untrained FLMN (weights scaled up, so that its guesses depend on the input) and
    random 20x20 images of 12 classes x 20 drawers."""
    mcfg = ModelConfig(model="flmn", n_classes=classes, hidden=hidden, slots=8, width=4)
    params = {k: 4 * v for k, v in init_params(mcfg, 0, get_xp("numpy")).items()}
    images = np.random.default_rng(1).random((12, 20, 400)).astype(np.float32)
    return mcfg, params, EpisodeSource(images, np.arange(12), {})


def test_the_standard_error_changes_nothing_else_and_shrinks_with_episodes():
    mcfg, params, source = synthetic()
    acc, loss = evaluate_params(params, mcfg, source, 200, 4, seed=3)
    acc2, loss2, se = evaluate_params(params, mcfg, source, 200, 4, seed=3, with_se=True)
    assert np.array_equal(acc, acc2) and loss == loss2 and se.shape == (4,)
    assert np.all((se > 0) & (se < 0.05))
    _, _, se_long = evaluate_params(params, mcfg, source, 800, 4, seed=3, with_se=True,
                                    progress=True)
    assert np.mean(se_long / se) == pytest.approx(0.5, abs=0.15)   # ~ 1 / sqrt(episodes)


def test_target_se_goes_on_in_blocks_until_it_is_reached(monkeypatch):
    monkeypatch.setattr(evaluation, "SE_BLOCK", 100)
    mcfg, params, source = synthetic()
    _, _, se100 = evaluate_params(params, mcfg, source, 100, 4, seed=5, with_se=True)
    target = se100[1] / 2              # about 4 times the episodes
    acc, loss, se, episodes = evaluate_params(params, mcfg, source, 100, 4, seed=5,
                                              target_se=target)
    assert episodes % 100 == 0 and episodes > 100
    assert se[1] <= target
    # one block fewer would not have reached it; the same count without a target: the same
    _, _, se_before = evaluate_params(params, mcfg, source, episodes - 100, 4, seed=5,
                                      with_se=True)
    assert se_before[1] > target
    same = evaluate_params(params, mcfg, source, episodes, 4, seed=5, with_se=True)
    assert np.array_equal(same[0], acc) and np.array_equal(same[2], se)
    # the least number of episodes is kept even when the target is met before it
    assert evaluate_params(params, mcfg, source, 700, 4, seed=5, target_se=0.5)[3] == 700


def test_the_command_writes_the_standard_error_and_target_episodes(tiny_run, data_dir,  # noqa: F811
                                                                    capsys, tmp_path):
    from flmn_np.evaluate import main
    out = tmp_path / "e.json"
    assert main([str(tiny_run), "--episodes", "50", "--target-se", "1.0", "--json", str(out),
                 "--backend", "numpy", "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr()
    assert "episode SE (points)" in printed.out and "at most 1 points" in printed.out
    result = json.loads(out.read_text())
    n = result["episodes"]
    assert n % 1000 == 0 and result["accuracy_se"]["2"] <= 0.01
    assert sorted(result["accuracy_se"], key=int) == [str(k) for k in range(1, 11)]
    again = tmp_path / "again.json"
    assert main([str(tiny_run), "--episodes", str(n), "--json", str(again),
                 "--backend", "numpy", "--data-dir", str(data_dir)]) == 0
    repeat = json.loads(again.read_text())
    assert repeat["accuracy"] == result["accuracy"]
    assert repeat["accuracy_se"] == result["accuracy_se"]


@pytest.mark.parametrize("value", ["0", "-1", "x", "inf"])
def test_target_se_must_be_a_positive_number(value, capsys):
    from flmn_np.evaluate import main
    with pytest.raises(SystemExit) as e:
        main(["run", "--target-se", value])
    assert e.value.code == 2 and "--target-se" in capsys.readouterr().err


def test_report_gives_the_episode_standard_error_where_the_files_have_it(tmp_path, capsys):
    from flmn_np.report import main as report
    for name, se in (("flmn-a", 0.0019), ("flmn-b", None)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"config": {"batch_size": 16}}))
        record = {"checkpoint_step": 6250, "episodes": 7000,
                  "accuracy": {str(k): 0.5 for k in range(1, 11)}}
        if se is not None:
            record["accuracy_se"] = {str(k): se for k in range(1, 11)}
        (run / "eval_omniglot.json").write_text(json.dumps(record))
    assert report([str(tmp_path / "flmn-a"), str(tmp_path / "flmn-b"), "--instances", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| 2nd | episode SE, 2nd |")
    assert lines[2] == "| flmn-a | 6,250 (100,000) | 7,000 | 50.0 | 0.19 |"
    assert lines[3] == "| flmn-b | 6,250 (100,000) | 7,000 | 50.0 | n/a |"
