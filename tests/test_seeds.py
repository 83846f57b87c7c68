"""flmn_np.seeds: grouping by seed suffix, mean and 95% t-interval, per-seed CSV, training stats."""
import csv
import json
import math

from pathlib import Path

import pytest

from flmn_np import seeds
from flmn_np.runs.metrics import csv_columns


def fake_run(root, name, acc2, val2=(0.5, 0.7, 0.6), grad_norms=(1.0, 3.5, 2.0),
             train2=(0.2, 0.5, 0.9), se2=None, episodes=1000):
    """A run directory with metrics.csv, validation.csv and eval_omniglot.json (with an episode
    standard error at every instance when se2, the 2nd instance's, is given)."""
    d = root / name
    d.mkdir(parents=True)
    acc = {str(k): 0.5 for k in range(1, 11)}
    acc["2"] = acc2
    record = {"accuracy": acc, "checkpoint_step": 6250, "episodes": episodes}
    if se2 is not None:
        record["accuracy_se"] = {str(k): 0.001 for k in range(1, 11)} | {"2": se2}
    (d / "eval_omniglot.json").write_text(json.dumps(record))
    cols = csv_columns(10)
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for i, (g, a) in enumerate(zip(grad_norms, train2)):
            w.writerow({c: "" for c in cols} | {"step": 50 * (i + 1), "grad_norm": g,
                                                "train_acc_2": a, "test_acc_2": a})
    with open(d / "validation.csv", "w") as f:
        f.write("step,val_acc_2\n" + "".join(f"{250 * (i + 1)},{v}\n" for i, v in enumerate(val2)))
    return d


def test_mean_and_t_interval():
    mean, half = seeds.mean_ci([80.0, 82.0, 84.0])
    assert mean == pytest.approx(82.0)
    assert half == pytest.approx(4.303 * 2.0 / math.sqrt(3))     # s = 2, t_{0.975, 2} = 4.303
    assert math.isnan(seeds.mean_ci([70.0])[1])


def test_groups_csv_and_summary(tmp_path):
    runs = [fake_run(tmp_path, f"flmn-exp1-product-s{s}", a) for s, a in ((1, 0.80), (2, 0.82), (3, 0.84))]
    runs.append(fake_run(tmp_path, "mann-exp1-product-s1", 0.6, train2=(0.2, 0.3, 0.4)))
    out_csv, out_md, out_png = tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "s.png"
    assert seeds.main([str(r) for r in runs] + ["--csv", str(out_csv), "--md", str(out_md),
                                                "--png", str(out_png)]) == 0
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["group"] for r in rows] == ["flmn-exp1-product"] * 3 + ["mann-exp1-product"]
    assert [r["acc_2"] for r in rows] == ["80.00", "82.00", "84.00", "60.00"]
    md = out_md.read_text()
    assert "| flmn-exp1-product | 3 | 6,250 | 50.0 ± 0.0 | 82.0 ± 5.0 |" in md
    assert "| mann-exp1-product | 1 | 6,250 | 50.0 | 60.0 |" in md
    # largest grad norm 3.5, leaves chance (train 2nd > 45%) at the 2nd row = step 100,
    # validation best 70.0, last 60.0; MANN never leaves chance
    assert "| flmn-exp1-product-s1 | 3.50 | 100 | 70.0 | 60.0 |" in md
    assert "| mann-exp1-product-s1 | 3.50 | nan |" in md
    assert out_png.stat().st_size > 10_000


def test_band_over_shared_steps_and_every_seed_drawn_in_full(tmp_path, monkeypatch):
    """Runs of different lengths: the mean and band stop where the shorter run stops, and each
    run's own curve is drawn to its last step."""
    from matplotlib.figure import Figure
    short = fake_run(tmp_path, "flmn-s1", 0.9, grad_norms=(1.0,) * 3, train2=(0.2, 0.5, 0.9))
    long = fake_run(tmp_path, "flmn-s2", 0.9, grad_norms=(1.0,) * 5,
                    train2=(0.4, 0.7, 0.8, 0.9, 0.95))
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    seeds.plot_bands(tmp_path / "c.png", {"flmn": [short, long]})
    (ax,) = saved[0].axes
    mean, *per_seed = ax.lines
    assert list(mean.get_xdata()) == [50, 100, 150]
    assert list(mean.get_ydata()) == pytest.approx([30.0, 60.0, 85.0])
    assert [list(line.get_xdata()) for line in per_seed] == [[50, 100, 150],
                                                             [50, 100, 150, 200, 250]]
    assert list(per_seed[1].get_ydata()) == pytest.approx([40.0, 70.0, 80.0, 90.0, 95.0])


def test_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert seeds.main([str(tmp_path), "--csv", str(tmp_path / "a"), "--md", str(tmp_path / "b")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_reference_rows_follow_their_group(tmp_path):
    runs = [fake_run(tmp_path, f"flmn-exp1-product-s{s}", a) for s, a in ((1, 0.80), (2, 0.84))]
    ref = tmp_path / "paper.csv"
    ref.write_text("group,dataset,label,acc_1,acc_2,acc_3,acc_4,acc_5,acc_10\n"
                   "flmn-exp1-product,omniglot,\"FLMN, paper\",31.1,85.6,88.7,89.5,91.0,94.1\n"
                   "flmn-exp1-product,mnist,\"FLMN, miniMNIST, paper\",28.5,67.6,,,,80.5\n")
    md = tmp_path / "s.md"
    assert seeds.main([str(r) for r in runs] + ["--csv", str(tmp_path / "s.csv"), "--md", str(md),
                                                "--reference", str(ref)]) == 0
    lines = md.read_text().splitlines()
    ours = next(i for i, line in enumerate(lines) if line.startswith("| flmn-exp1-product | 2 |"))
    assert lines[ours + 1] == "| FLMN, paper | | | 31.1 | 85.6 | 88.7 | 89.5 | 91.0 | 94.1 | | |"
    assert "miniMNIST" not in md.read_text()      # the run has no mnist evaluation: no such table


def test_every_evaluation_the_run_has_gets_a_table(tmp_path):
    """best.npz on miniMNIST too (the public-protocol runs evaluate it); missing ones: no table."""
    run = fake_run(tmp_path, "flmn-s1", 0.9)
    acc = {str(k): 0.25 for k in range(1, 11)}
    (run / "eval_mnist_best.json").write_text(json.dumps(
        {"accuracy": acc, "checkpoint_step": 4000, "episodes": 1000}))
    out_csv, md = tmp_path / "s.csv", tmp_path / "s.md"
    assert seeds.main([str(run), "--csv", str(out_csv), "--md", str(md)]) == 0
    rows = [(r["dataset"], r["checkpoint"], r["step"]) for r in csv.DictReader(open(out_csv))]
    assert rows == [("omniglot", "last", "6250"), ("mnist", "best", "4000")]
    text = md.read_text()
    assert "### mnist, best.npz (chosen on validation classes)" in text
    assert "| flmn | 1 | 4,000 | 25.0 | 25.0 |" in text
    assert "### mnist, last checkpoint" not in text and "### omniglot, best.npz" not in text


@pytest.mark.parametrize("name, group", [("flmn-exp1-product-s3", "flmn-exp1-product"),
                                         ("flmn-s3-ft-lr1e-4", "flmn-ft-lr1e-4"),
                                         ("mann4-s12", "mann4"),
                                         ("flmn-m128x64-s1", "flmn-m128x64"),
                                         ("flmn-s3x-long", "flmn-s3x-long")])
def test_the_seed_tag_goes_at_the_end_or_between_dashes(name, group):
    assert seeds.group_name(name) == group


def test_the_members_of_a_seeds_stack_are_one_group(tmp_path):
    """`train.py --seeds 1-3 --out OUT` writes OUT/seed-1 ... OUT/seed-3: one row, 3 seeds."""
    runs = [fake_run(tmp_path / "flmn-stack", f"seed-{s}", a)
            for s, a in ((1, 0.80), (2, 0.82), (3, 0.84))]
    out_csv, md = tmp_path / "s.csv", tmp_path / "s.md"
    assert seeds.main([str(r) for r in runs] + ["--csv", str(out_csv), "--md", str(md)]) == 0
    text = md.read_text()
    assert "| flmn-stack | 3 | 6,250 | 50.0 ± 0.0 | 82.0 ± 5.0 |" in text
    assert "| seed-1 |" not in text and "| flmn-stack/seed-2 | 3.50 |" in text
    rows = list(csv.DictReader(open(out_csv)))
    assert [(r["group"], r["run"]) for r in rows] == [("flmn-stack", f"flmn-stack/seed-{s}")
                                                      for s in (1, 2, 3)]
    assert seeds.group_name("seed-4") == Path.cwd().name        # a relative member: its parent
    assert seeds.group_name(tmp_path / "x" / "seed-12") == "x"
    assert seeds.group_name(tmp_path / "seed-1x") == "seed-1x"


def test_episode_standard_error_apart_from_the_seed_interval(tmp_path):
    """The SE of a mean over runs is sqrt(sum se_i^2) / n; a file without it reads n/a."""
    runs = [fake_run(tmp_path, f"flmn-s{s}", a, se2=se, episodes=n)
            for s, a, se, n in ((1, 0.80, 0.003, 4000), (2, 0.84, 0.004, 7000))]
    out_csv, md = tmp_path / "s.csv", tmp_path / "s.md"
    assert seeds.main([str(r) for r in runs] + ["--csv", str(out_csv), "--md", str(md)]) == 0
    text = md.read_text()
    assert "| flmn | 2 | 6,250 | 50.0 ± 0.0 | 82.0 ± 25.4 | 50.0 ± 0.0 | 50.0 ± 0.0 | " \
           "50.0 ± 0.0 | 50.0 ± 0.0 | 4,000-7,000 | 0.25 / 0.07 |" in text
    rows = list(csv.DictReader(open(out_csv)))
    assert [(r["episodes"], r["se_2"], r["se_10"]) for r in rows] == [("4000", "0.30", "0.10"),
                                                                       ("7000", "0.40", "0.10")]
    old = fake_run(tmp_path / "old", "mann-s1", 0.6)
    assert seeds.main([str(old), "--csv", str(out_csv), "--md", str(md)]) == 0
    assert "| 1,000 | n/a / n/a |" in md.read_text()
    assert list(csv.DictReader(open(out_csv)))[0]["se_2"] == ""


def test_welch_test_and_interval_overlap_between_groups(tmp_path):
    a, b = [80.0, 82.0, 84.0], [70.0, 71.0, 72.0]
    d, t, df, sig = seeds.welch(a, b)
    assert d == pytest.approx(11.0)
    assert t == pytest.approx(11.0 / math.sqrt(4 / 3 + 1 / 3))
    assert df == pytest.approx((5 / 3) ** 2 / ((4 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2))
    assert sig
    assert not seeds.welch([80.0, 82.0, 84.0], [79.0, 83.0, 81.5])[3]
    assert math.isnan(seeds.welch([80.0], [70.0, 71.0])[1])
    assert seeds.t_975(2.9) == 4.303 and seeds.t_975(22.5) == 2.086 and seeds.t_975(500) == 1.980
    runs = [fake_run(tmp_path, f"flmn-s{s}", v / 100) for s, v in zip((1, 2, 3), a)]
    runs += [fake_run(tmp_path, f"mann-s{s}", v / 100) for s, v in zip((1, 2, 3), b)]
    runs += [fake_run(tmp_path, f"mann4-s{s}", v / 100)
             for s, v in zip((1, 2, 3), (79.0, 83.0, 81.5))]
    md = tmp_path / "s.md"
    assert seeds.main([str(r) for r in runs] + ["--csv", str(tmp_path / "s.csv"),
                                                "--md", str(md)]) == 0
    text = md.read_text()
    same = "+0.0; no test; CIs overlap; 0/9"
    assert f"| flmn - mann | {same} | +11.0; Welch sig.; CIs apart; 9/9 |" in text
    assert f"| flmn - mann4 | {same} | +0.8; Welch n.s.; CIs overlap; 6/9 |" in text
