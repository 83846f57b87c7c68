"""Per-instance accuracy, the accuracy table and metrics.csv handling on hand-built examples."""
import numpy as np
import pytest

from flmn_np.core.backend import asarray, get_xp, to_numpy
from flmn_np.runs.metrics import (accuracy_on_host, append_metrics, column, csv_columns,
                                  format_accuracy_table, make_row, ordinal, per_instance_accuracy,
                                  per_instance_counts, read_metrics, start_metrics)

# Two episodes, C = 2 classes, S = 3 samples: T = 6.
Y = np.array([[0, 1, 1, 0, 0, 1],
              [1, 1, 0, 1, 0, 0]])
INSTANCE = np.array([[0, 0, 1, 1, 2, 2],      # k-th presentation (0-based) of y[b, t]'s class
                     [0, 1, 0, 2, 1, 2]])
PREDS = np.array([[1, 1, 1, 0, 1, 1],         # correct: F T T T F T
                  [1, 0, 0, 1, 0, 0]])        # correct: T F T T T T
# episode 0: k=1 at t=0 (F), t=1 (T); k=2 at t=2 (T), t=3 (T); k=3 at t=4 (F), t=5 (T)
# episode 1: k=1 at t=0 (T), t=2 (T); k=2 at t=1 (F), t=4 (T); k=3 at t=3 (T), t=5 (T)
EXPECTED = np.array([3 / 4, 3 / 4, 3 / 4])


def one_hot_logits(preds, n_classes):
    """Logits whose argmax is `preds`."""
    return np.eye(n_classes, dtype=np.float32)[preds] * 2.0 - 1.0


def test_counts_from_predictions():
    correct, total = per_instance_counts(PREDS, Y, INSTANCE, 3)
    np.testing.assert_array_equal(correct, [3, 3, 3])
    np.testing.assert_array_equal(total, [4, 4, 4])


def test_accuracy_from_logits_equals_from_predictions():
    acc_logits = per_instance_accuracy(one_hot_logits(PREDS, 2), Y, 3, instance=INSTANCE)
    acc_preds = per_instance_accuracy(PREDS, Y, 3, instance=INSTANCE)
    np.testing.assert_allclose(acc_logits, EXPECTED)
    np.testing.assert_allclose(acc_preds, EXPECTED)
    assert acc_logits.dtype == np.float32


def test_accuracy_all_right_and_all_wrong():
    assert np.all(per_instance_accuracy(Y, Y, 3, instance=INSTANCE) == 1.0)
    assert np.all(per_instance_accuracy(1 - Y, Y, 3, instance=INSTANCE) == 0.0)


def test_unseen_instance_is_nan():
    acc = per_instance_accuracy(PREDS, Y, 4, instance=INSTANCE)   # no class is shown 4 times
    np.testing.assert_allclose(acc[:3], EXPECTED)
    assert np.isnan(acc[3])


def test_default_instance_index_comes_from_episodes():
    pytest.importorskip("flmn_np.data.episodes")
    np.testing.assert_allclose(per_instance_accuracy(PREDS, Y, 3), EXPECTED)


def test_accuracy_on_each_backend_stays_on_it(backend):
    xp = get_xp(backend)
    logits = asarray(one_hot_logits(PREDS, 2), xp)
    acc = per_instance_accuracy(logits, asarray(Y, xp, "int64"), 3,
                                instance=asarray(INSTANCE, xp, "int64"))
    assert not isinstance(acc, np.ndarray) or backend == "numpy"
    np.testing.assert_allclose(to_numpy(acc), EXPECTED, rtol=1e-6)


def test_ordinals():
    assert [ordinal(k) for k in (1, 2, 3, 4, 10, 11, 12, 13, 21, 22)] == [
        "1st", "2nd", "3rd", "4th", "10th", "11th", "12th", "13th", "21st", "22nd"]


def test_table_lists_paper_instances_in_percent():
    acc = np.linspace(0.1, 1.0, 10)
    lines = format_accuracy_table(acc, episodes=1000, title="FLMN").splitlines()
    assert lines[0].split()[-6:] == ["1st", "2nd", "3rd", "4th", "5th", "10th"]
    assert "1000 episodes" in lines[0]
    assert lines[1].split() == ["FLMN", "10.0", "20.0", "30.0", "40.0", "50.0", "100.0"]


def test_table_leaves_out_instances_beyond_s():
    lines = format_accuracy_table(np.array([0.5, 0.25, 1.0]), episodes=8).splitlines()
    assert lines[0].split()[-3:] == ["1st", "2nd", "3rd"]
    assert lines[1].split() == ["50.0", "25.0", "100.0"]


def test_metrics_csv_truncates_rows_past_the_resume_step(tmp_path):
    path = tmp_path / "metrics.csv"
    assert start_metrics(path, 3) == 0.0
    for step in (2, 4, 6):
        test = [0.5, 0.6, 0.7] if step == 4 else None
        row = make_row(step, 2 * step, 1.5, 3.0, [0.2, 0.3, 0.4], test, step / 10)
        append_metrics(path, row, 3)
    rows = read_metrics(path)
    assert list(rows[0]) == csv_columns(3)
    assert [r["step"] for r in rows] == ["2", "4", "6"]
    assert rows[0]["test_acc_1"] == "" and rows[1]["test_acc_3"] == "0.7000"

    assert start_metrics(path, 3, keep_until_step=4) == pytest.approx(0.4)
    rows = read_metrics(path)
    assert [int(r["step"]) for r in rows] == [2, 4]
    np.testing.assert_allclose(column(rows, "test_acc_2"), [np.nan, 0.6])


def test_accuracy_on_host_divides_in_float64():
    correct, total = per_instance_counts(PREDS, Y, INSTANCE, 3)
    acc = accuracy_on_host(correct, total)
    assert acc.dtype == np.float64 and acc.tolist() == [0.75, 0.75, 0.75]
    assert accuracy_on_host(np.float32([4.0]), np.float32([25.0])).tolist() == [0.16]
