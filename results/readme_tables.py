"""The tables of results/README.md, made from the runs' eval_*.json files (run from the
repository root after results/reevaluate-commands.txt):

    python results/readme_tables.py > results/readme_tables.md

Group rows: mean ± half-width of the 95% t-interval over training seeds (flmn_np.seeds.mean_ci);
the last two columns are each run's test episodes and the episode standard error of the mean at
the 2nd instance (sqrt(sum se_i^2) / n, points), which the seed interval already contains. Run
rows: the run's accuracy, its episodes and its own episode SE at the 2nd instance.
"""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flmn_np.seeds import INSTANCES, fmt, mean_ci, mean_se, welch   # noqa: E402

R = Path(__file__).resolve().parent


def ev(run, name="eval_omniglot.json"):
    r = json.loads((R / run / name).read_text())
    acc = {k: 100 * r["accuracy"][str(k)] for k in INSTANCES}
    se = {k: 100 * r.get("accuracy_se", {}).get(str(k), math.nan) for k in INSTANCES}
    return acc, se, int(r["episodes"]), int(r["checkpoint_step"])


def runs(pattern, seeds):
    return [pattern.format(s) for s in seeds]


def span(values):
    values = sorted(set(values))
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}-{values[-1]:,}"


def group_row(label, dirs, name="eval_omniglot.json"):
    evals = [ev(d, name) for d in dirs]
    cells = [fmt(*mean_ci([e[0][k] for e in evals])) for k in INSTANCES]
    se = mean_se([e[1][2] for e in evals])
    return (f"| {label} | " + " | ".join(cells)
            + f" | {span(e[2] for e in evals)} | {se:.2f} |")


def seeds_row(label, dirs, name="eval_omniglot.json"):
    evals = [ev(d, name) for d in dirs]
    cells = [" / ".join(f"{e[0][k]:.1f}" for e in evals) for k in INSTANCES]
    return (f"| {label} | " + " | ".join(cells) + f" | {' / '.join(f'{e[2]:,}' for e in evals)}"
            f" | {' / '.join(f'{e[1][2]:.2f}' for e in evals)} |")


def run_row(label, run, name="eval_omniglot.json", steps=False):
    acc, se, n, step = ev(run, name)
    mid = f" {step:,} |" if steps else ""
    return (f"| {label} |{mid} " + " | ".join(f"{acc[k]:.1f}" for k in INSTANCES)
            + f" | {n:,} | {se[2]:.2f} |")


def paper_row(label, cells):
    return f"| {label} | " + " | ".join(cells) + " | | |"


HEAD = ("| model | 1st | 2nd | 3rd | 4th | 5th | 10th | test episodes per run "
        "| episode SE of the mean, 2nd |\n|---|---|---|---|---|---|---|---|---|")
PAPER = {"flmn1": "31.1 85.6 88.7 89.5 91.0 94.1", "flmn2": "33.9 86.5 89.1 89.7 91.1 94.4",
         "mann1": "21.6 66.7 74.0 76.0 76.3 78.1", "mann2": "22.2 65.5 72.0 74.5 76.4 77.2",
         "public": "35.6 88.8 95.0 96.5 97.3 97.6", "santoro": "36.4 82.8 91.0 92.6 94.9 98.1",
         "ref_flmn": "31.6 85.0 89.7 91.7 92.6 94.7", "ref_mann": "22.2 56.8 64.1 65.7 67.6 65.9",
         "mnist_flmn": "28.5 67.6 - - - 80.5", "mnist_mann": "14.6 37.3 - - - 52.0"}


def p(key):
    return [c if c != "-" else "" for c in PAPER[key].split()]


S, P, A, C = "seeds/", "public/", "authors/", "candidates/"
S5 = range(1, 6)
S3 = range(1, 4)


def summary():
    flmn1, mann1 = runs(S + "flmn-exp1-product-s{}", S5), runs(S + "mann-exp1-product-s{}", S5)
    mann41 = runs(S + "mann4-exp1-s{}", S5)
    flmn2, mann2 = runs(S + "flmn-exp2-s{}", S5), runs(S + "mann-exp2-s{}", S5)
    mann42 = runs(S + "mann4-exp2-s{}", S5)
    pm4, pf = runs(P + "mann4-s{}", S3), runs(P + "flmn-s{}", S3)
    ft = runs(C + "flmn-s{}-ft-lr1e-4", S3)
    af20, af = runs(A + "flmn-exp1-20000-s{}", S3), runs(A + "flmn-exp1-s{}", S3)
    am20, am = runs(A + "mann-exp1-20000-s{}", S3), runs(A + "mann-exp1-s{}", S3)
    m = "eval_mnist.json"
    rows = [HEAD, "| *Experiment I* (no augmentation) | | | | | | | | |",
            group_row("**FLMN, ours** (5 seeds)", flmn1),
            paper_row("FLMN, Experiment I, paper (Table 1)", p("flmn1")),
            paper_row("FLMN, reference curve at 100,000 episodes", p("ref_flmn")),
            group_row("**MANN R = 1, ours** (5 seeds)", mann1),
            paper_row("MANN, Experiment I, paper (Table 1)", p("mann1")),
            paper_row("MANN R = 1, reference curve at 100,000 episodes", p("ref_mann")),
            group_row("**MANN R = 4, ours** (5 seeds)", mann41),
            "| *The public implementations' protocol* (Experiment II plus 90-degree classes; up "
            "to 100,000 steps of 16, early stop on validation classes; [below](#the-public-"
            "implementations-protocol)) | | | | | | | | |",
            group_row("**MANN R = 4, ours** (3 seeds; early stop at 71,000 and 77,000 steps, "
                      "and 100,000)", pm4),
            seeds_row("MANN R = 4, ours, seed 1 / 2 / 3", pm4),
            paper_row("MANN R = 4, public implementations' READMEs (100,000 steps of 16, "
                      "Santoro et al.'s augmentation)", p("public")),
            paper_row("MANN, Santoro et al. 2016 (Table 1 of their paper, as the FLMN paper's "
                      "Table 1 quotes it)", p("santoro")),
            group_row("**FLMN, ours** (3 seeds; early stop at 53,000 and 82,000 steps, and "
                      "100,000)", pf),
            seeds_row("FLMN, ours, seed 1 / 2 / 3", pf),
            group_row("**FLMN, ours, then lr 1e-4** (3 seeds: each `best.npz` trained on at lr "
                      "1e-4, early stop on validation; [candidates](candidates/README.md))", ft),
            seeds_row("FLMN, ours, then lr 1e-4, seed 1 / 2 / 3", ft),
            "| *The authors' protocol* (batch 5, Experiment I, 3 seeds; [below](#the-authors-"
            "protocol)) | | | | | | | | |",
            group_row("**FLMN, ours, 20,000 steps of 5** (the paper's 100,000 episodes)", af20),
            group_row("**FLMN, ours, 100,000 steps of 5** (the authors' code)", af),
            paper_row("FLMN, Experiment I / II, paper", [f"{a} / {b}" for a, b in
                                                        zip(p("flmn1"), p("flmn2"))]),
            group_row("**MANN R = 1, ours, 20,000 steps of 5** (the paper's 100,000 episodes)",
                      am20),
            group_row("**MANN R = 1, ours, 100,000 steps of 5** (the authors' code)", am),
            paper_row("MANN, Experiment I / II, paper", [f"{a} / {b}" for a, b in
                                                        zip(p("mann1"), p("mann2"))]),
            "| *Experiment II* (rotation U[-pi/16, pi/16], shift U[-10, 10] px) | | | | | | | | |",
            group_row("**FLMN, ours** (5 seeds)", flmn2),
            paper_row("FLMN, Experiment II, paper (Table 1)", p("flmn2")),
            group_row("**MANN R = 1, ours** (5 seeds)", mann2),
            paper_row("MANN, Experiment II, paper (Table 1)", p("mann2")),
            group_row("**MANN R = 4, ours** (5 seeds)", mann42),
            "| *Zero-shot miniMNIST* (Experiment I models) | | | | | | | | |",
            group_row("**FLMN, ours** (5 seeds)", flmn1, m),
            paper_row("FLMN, zero-shot miniMNIST, paper (Table 2)", p("mnist_flmn")),
            group_row("**MANN R = 1, ours** (5 seeds)", mann1, m),
            paper_row("MANN, zero-shot miniMNIST, paper (Table 2)", p("mnist_mann")),
            group_row("**MANN R = 4, ours** (5 seeds)", mann41, m),
            "| *Zero-shot miniMNIST* (the authors' protocol, 20,000 steps of 5, 3 seeds) "
            "| | | | | | | | |",
            group_row("**FLMN, ours**", af20, m),
            group_row("**MANN R = 1, ours**", am20, m),
            "| *Zero-shot miniMNIST* (public-protocol models, 3 seeds) | | | | | | | | |",
            group_row("**FLMN, ours**", pf, m),
            group_row("**MANN R = 4, ours**", pm4, m)]
    return "\n".join(rows)


def public_runs():
    head = ("| run | stopped at | best.npz (validation 2nd) | test, last: 1st / 2nd / 3rd / 4th / "
            "5th / 10th | test, best.npz | miniMNIST, last: 2nd / 10th | miniMNIST, best.npz "
            "| test, last, other episodes (seed 4321): 2nd / 10th | episodes (SE, 2nd): test "
            "last / best / miniMNIST last / best / seed 4321 |\n|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for name in ["mann4-s1", "mann4-s2", "mann4-s3", "flmn-s1", "flmn-s2", "flmn-s3"]:
        run = P + name
        best = json.loads((R / run / "best.json").read_text())
        last = ev(run)
        files = ["eval_omniglot.json", "eval_omniglot_best.json", "eval_mnist.json",
                 "eval_mnist_best.json", "eval_omniglot_seed4321.json"]
        e = [ev(run, f) for f in files]
        six = lambda a: " / ".join(f"{a[k]:.1f}" for k in INSTANCES)             # noqa: E731
        two = lambda a: f"{a[2]:.1f} / {a[10]:.1f}"                              # noqa: E731
        val = best.get("val_acc_2", best.get("score"))
        val_text = f" ({100 * val:.1f})" if isinstance(val, float) else ""
        rows.append(f"| [`public/{name}`](public/{name}) | {last[3]:,} | "
                    f"{int(best['step']):,}{val_text} | {six(e[0][0])} | {six(e[1][0])} | "
                    f"{two(e[2][0])} | {two(e[3][0])} | {two(e[4][0])} | "
                    + " / ".join(f"{x[2]:,} ({x[1][2]:.2f})" for x in e) + " |")
    return "\n".join(rows)


def single_seed():
    head = ("| model | 1st | 2nd | 3rd | 4th | 5th | 10th | test episodes | episode SE, 2nd |\n"
            "|---|---|---|---|---|---|---|---|---|")
    rows = [head,
            paper_row("MANN (Santoro et al. 2016), as the paper's Table 1 quotes it", p("santoro")),
            "| **Experiment I** (no augmentation) | | | | | | | | |",
            paper_row("MANN, paper", p("mann1")),
            paper_row("MANN, reference curve at 100,000 episodes", p("ref_mann")),
            run_row("MANN R = 1, ours ([`mann-exp1`](mann-exp1))", "mann-exp1"),
            run_row("same, other episodes (seed 777)", "mann-exp1", "eval_omniglot_seed777.json"),
            paper_row("FLMN, paper", p("flmn1")),
            paper_row("FLMN, reference curve at 100,000 episodes", p("ref_flmn")),
            run_row("FLMN, ours ([`flmn-exp1`](flmn-exp1))", "flmn-exp1"),
            run_row("same, other episodes (seed 777)", "flmn-exp1", "eval_omniglot_seed777.json"),
            run_row("MANN R = 4 (Santoro's setting), ours ([`mann4-exp1`](mann4-exp1))",
                    "mann4-exp1"),
            run_row("same, other episodes (seed 777)", "mann4-exp1",
                    "eval_omniglot_seed777.json"),
            "| **Experiment II** (rotation U[-pi/16, pi/16], shift U[-10, 10] px) | | | | | | | | |",
            paper_row("MANN, paper", p("mann2")),
            run_row("MANN R = 1, ours ([`mann-exp2`](mann-exp2))", "mann-exp2"),
            run_row("same, other episodes (seed 777)", "mann-exp2", "eval_omniglot_seed777.json"),
            paper_row("FLMN, paper", p("flmn2")),
            run_row("FLMN, ours ([`flmn-exp2`](flmn-exp2))", "flmn-exp2"),
            run_row("same, other episodes (seed 777)", "flmn-exp2", "eval_omniglot_seed777.json")]
    return "\n".join(rows)


def single_mnist():
    head = ("| model | 1st | 2nd | 3rd | 4th | 5th | 10th | test episodes | episode SE, 2nd |\n"
            "|---|---|---|---|---|---|---|---|---|")
    m = "eval_mnist.json"
    return "\n".join([head, paper_row("MANN, paper", p("mnist_mann")),
                      run_row("MANN R = 1, ours (`mann-exp1/eval_mnist.json`)", "mann-exp1", m),
                      paper_row("FLMN, paper", p("mnist_flmn")),
                      run_row("FLMN, ours (`flmn-exp1/eval_mnist.json`)", "flmn-exp1", m),
                      run_row("MANN R = 4, ours (`mann4-exp1/eval_mnist.json`)", "mann4-exp1", m),
                      run_row("FLMN, 100,000 steps (`flmn-exp1-long`)", "flmn-exp1-long", m),
                      run_row("MANN R = 1, 100,000 steps (`mann-exp1-long`)", "mann-exp1-long", m),
                      run_row("MANN R = 4, 63,211 steps (`mann4-exp1-long`)", "mann4-exp1-long",
                              m)])


def long_runs():
    head = ("| model | steps | 1st | 2nd | 3rd | 4th | 5th | 10th | test episodes "
            "| episode SE, 2nd |\n|---|---|---|---|---|---|---|---|---|---|")
    o = "eval_omniglot_seed777.json"
    return "\n".join([
        head, "| FLMN, paper (\"100,000 episodes\") | | " + " | ".join(p("flmn1")) + " | | |",
        "| MANN R = 4, public implementations' READMEs | 100,000 | " + " | ".join(p("public"))
        + " | | |",
        run_row("FLMN, ours ([`flmn-exp1-long`](flmn-exp1-long))", "flmn-exp1-long", steps=True),
        run_row("FLMN, ours, other episodes (seed 777)", "flmn-exp1-long", o, steps=True),
        run_row("MANN R = 1, ours ([`mann-exp1-long`](mann-exp1-long))", "mann-exp1-long",
                steps=True),
        run_row("MANN R = 1, ours, other episodes (seed 777)", "mann-exp1-long", o, steps=True),
        run_row("MANN R = 4, ours ([`mann4-exp1-long`](mann4-exp1-long))", "mann4-exp1-long",
                steps=True),
        run_row("MANN R = 4, ours, other episodes (seed 777)", "mann4-exp1-long", o,
                steps=True)])


def early_stopping():
    head = ("| model | checkpoint | steps | 1st | 2nd | 3rd | 4th | 5th | 10th | test episodes "
            "| episode SE, 2nd |\n|---|---|---|---|---|---|---|---|---|---|---|")
    b, bo = "eval_omniglot_best.json", "eval_omniglot_best_seed777.json"
    rows = [head, "| FLMN, paper, Experiment I | | \"100,000 episodes\" | "
            + " | ".join(p("flmn1")) + " | | |"]
    for label, run in (("FLMN I, ours, seed 1", "flmn-exp1-val"),
                       ("FLMN I, ours, seed 2", "flmn-exp1-val-seed2"),
                       ("FLMN I, ours, seed 3", "flmn-exp1-val-seed3"),
                       ("FLMN II, ours, seed 1", "flmn-exp2-val")):
        if run == "flmn-exp2-val":
            rows.append("| FLMN, paper, Experiment II | | \"100,000 episodes\" | "
                        + " | ".join(p("flmn2")) + " | | |")
        rows.append(run_row(f"{label} ([`{run}`]({run})) | best.npz", run, b, steps=True))
        rows.append(run_row("same, other episodes (seed 777) | best.npz", run, bo, steps=True))
        rows.append(run_row("same run, last checkpoint | last", run, steps=True))
    return "\n".join(rows)


def comparisons():
    """Welch tests over seeds for the differences the README states."""
    pairs = [("public FLMN - public MANN R = 4", runs(P + "flmn-s{}", S3), runs(P + "mann4-s{}", S3),
              "eval_omniglot.json"),
             ("public FLMN then lr 1e-4 - public FLMN", runs(C + "flmn-s{}-ft-lr1e-4", S3),
              runs(P + "flmn-s{}", S3), "eval_omniglot.json"),
             ("Exp I FLMN - MANN R = 4", runs(S + "flmn-exp1-product-s{}", S5),
              runs(S + "mann4-exp1-s{}", S5), "eval_omniglot.json"),
             ("Exp I MANN R = 4 - MANN R = 1", runs(S + "mann4-exp1-s{}", S5),
              runs(S + "mann-exp1-product-s{}", S5), "eval_omniglot.json"),
             ("Exp II MANN R = 4 - MANN R = 1", runs(S + "mann4-exp2-s{}", S5),
              runs(S + "mann-exp2-s{}", S5), "eval_omniglot.json"),
             ("Exp II FLMN - MANN R = 4", runs(S + "flmn-exp2-s{}", S5),
              runs(S + "mann4-exp2-s{}", S5), "eval_omniglot.json"),
             ("miniMNIST FLMN - MANN R = 4", runs(S + "flmn-exp1-product-s{}", S5),
              runs(S + "mann4-exp1-s{}", S5), "eval_mnist.json"),
             ("miniMNIST MANN R = 4 - MANN R = 1", runs(S + "mann4-exp1-s{}", S5),
              runs(S + "mann-exp1-product-s{}", S5), "eval_mnist.json"),
             ("miniMNIST public FLMN - public MANN R = 4", runs(P + "flmn-s{}", S3),
              runs(P + "mann4-s{}", S3), "eval_mnist.json"),
             ("authors FLMN 20,000 - 100,000 steps", runs(A + "flmn-exp1-20000-s{}", S3),
              runs(A + "flmn-exp1-s{}", S3), "eval_omniglot.json"),
             ("authors MANN R = 1 100,000 - 20,000 steps", runs(A + "mann-exp1-s{}", S3),
              runs(A + "mann-exp1-20000-s{}", S3), "eval_omniglot.json")]
    head = ("| difference (points) | " + " | ".join(f"{k}" for k in INSTANCES)
            + " |\n|---|" + "---|" * len(INSTANCES))
    rows = [head]
    for label, a, b, name in pairs:
        ea, eb = [ev(d, name)[0] for d in a], [ev(d, name)[0] for d in b]
        cells = []
        for k in INSTANCES:
            va, vb = [e[k] for e in ea], [e[k] for e in eb]
            d, t, df, sig = welch(va, vb)
            (ma, ha), (mb, hb) = mean_ci(va), mean_ci(vb)
            apart = not (ma - ha <= mb + hb and mb - hb <= ma + ha)
            ahead = sum(x > y for x in va for y in vb)
            cells.append(f"{d:+.1f} (t = {t:.1f}, {'sig.' if sig else 'n.s.'}; "
                         f"{'apart' if apart else 'overlap'}; {ahead}/{len(va) * len(vb)})")
        rows.append(f"| {label} ({name.split('_')[1].split('.')[0]}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    for title, fn in (("summary", summary), ("public runs", public_runs),
                      ("single seed, Table 1", single_seed), ("single seed, Table 2", single_mnist),
                      ("longer training", long_runs), ("early stopping", early_stopping),
                      ("comparisons", comparisons)):
        print(f"## {title}\n\n{fn()}\n")


if __name__ == "__main__":
    main()
