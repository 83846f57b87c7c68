"""An evaluation point of a training run (every --eval-every steps and the last step): its
parameters scored on the validation classes (with --val-classes: best.npz and early stopping,
validation.py) and on the held-out test classes, each printed as a table. training.py's log
point calls both; the end of a run (finish.py) scores its last step and best.npz on the test
classes with the same function.
"""
from tqdm import tqdm

from ..core.backend import backend_name
from .evaluation import eval_record, evaluate_params
from .metrics import format_accuracy_table


def is_eval_step(cfg, step):
    return step == cfg.steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0)


def validate_now(run, step):
    """Score the parameters on the validation classes, keep best.npz up to date. Returns True
    when --patience evaluation points have passed without a better score (stop early)."""
    acc, loss = evaluate_params(run.params, run.mcfg, run.val, run.cfg.val_episodes,
                                run.cfg.samples, run.cfg.eval_seed)
    improved = run.best.update(step, acc, loss, run.params, run.opt.state_dict(),
                               run.cfg.to_dict())
    tqdm.write(format_accuracy_table(acc, run.cfg.val_episodes, title=f"validation, step {step}")
               + ("   (best so far: best.npz)" if improved else ""))
    return run.best.exhausted(run.cfg.patience)


def evaluate_on_test(run, params, step, episodes, title):
    """Held-out per-instance accuracy (S,) of `params` on `episodes` test episodes, printed as a
    table, and the record `python -m flmn_np.evaluate` would write for it."""
    acc, loss = evaluate_params(params, run.mcfg, run.test, episodes, run.cfg.samples,
                                run.cfg.eval_seed)
    tqdm.write(format_accuracy_table(acc, episodes, title=title))
    return acc, eval_record(run.dir, run.cfg, "omniglot", episodes, run.cfg.eval_seed, step,
                            backend_name(run.xp), loss, acc)


def evaluate_now(run, step, final):
    """(held-out per-instance accuracy (S,), its eval record) at `step`; (None, None) when the
    number of episodes for this point (--eval-episodes, or --final-eval-episodes) is 0."""
    episodes = run.cfg.final_eval_episodes if final else run.cfg.eval_episodes
    if episodes == 0:
        return None, None
    return evaluate_on_test(run, run.params, step, episodes, f"held-out, step {step}")
