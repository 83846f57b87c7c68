"""Several seeds in one process (train.py --seeds): their models as one stack, each an ordinary run.

`--seeds 1-5 --out DIR` trains the G = 5 seeds' models as one stack (core/models.py: every parameter
with the model axis (G, ...), episodes (G, B, ...), clipping and Adam per model; the stacked form
of docs/derivations.md#a-stack-of-models), and keeps each in its own run directory DIR/seed-N,
complete as a run trained alone: its config.json (its seed, its --out), metrics.csv, validation,
checkpoints and eval files, read by every command as any run. A run's `params` and `opt` are
views of its model in the stack (MemberParams, MemberOptimizer), so the loop's per-run code
(log points, validation, checkpoints, the end files) is the single run's, unchanged, and so is
its step (step.py), taken on the members' batches side by side.

A single run is a stack of one without the model axis (lead = ()): the same loop, and its arrays
are the run's own.

A member that ends (its last step, --patience, a non-finite loss) leaves the stack: the others'
models are stacked again without it and go on. Each model of a stack computes exactly what it
computes alone (tests/test_stack.py), so a member's run equals its seed's single run (bit for bit
on NumPy; tests/test_train.py).
"""
import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..core.models import stack_params
from ..core.optim import make_optimizer, model_state_dict, stack_state_dicts
from .config import ConfigError
from .rundir import open_run_dir
from .step import batch_for_step, train_step

MEMBER_FOLDER = "seed-{seed}"      # --seeds 1-5 --out DIR: DIR/seed-1, ..., DIR/seed-5
# what members of one stack may differ in (everything else is one config, stepped as one)
MEMBER_FIELDS = ("seed", "out", "resume", "data_dir")


def member_dir(out, seed):
    return Path(out) / MEMBER_FOLDER.format(seed=seed)


def open_members(cfg, given, seeds):
    """Open and lock DIR/seed-N for each seed (each as train.py --seed N --out DIR/seed-N would),
    closing those already opened when one is refused. -> [RunDir]."""
    rds = []
    try:
        for seed in seeds:
            out = str(member_dir(cfg.out, seed))
            rds.append(open_run_dir(dataclasses.replace(cfg, seed=seed, out=out),
                                    {**given, "seed": seed, "out": out}))
        check_stackable([rd.cfg for rd in rds])
    except BaseException:
        abandon_all(rds)
        raise
    return rds


def abandon_all(rds):
    """Abandon runs that failed to start, the last opened first: a member's folder goes before
    the OUT folder the first member created, so a failed fresh stack leaves nothing."""
    for rd in reversed(rds):
        rd.abandon()


def check_stackable(cfgs):
    """ConfigError unless the configs differ only in MEMBER_FIELDS (a member resumed alone with
    another --steps, say, cannot be stepped with the others)."""
    first = cfgs[0].to_dict()
    for cfg in cfgs[1:]:
        diff = [f"--{k.replace('_', '-')} {first[k]} / {v}" for k, v in cfg.to_dict().items()
                if k not in MEMBER_FIELDS and first[k] != v]
        if diff:
            raise ConfigError(f"{cfgs[0].out} and {cfg.out} differ in {', '.join(diff)}: "
                              f"resume them apart (--out) or with the same flags")


class Stack:
    """The models one process steps together: `runs` (setup.Run, one per member), their params
    `params` (with the model axis `lead`, (G,), when `stacked`, else the one run's own) and their
    optimizer `opt`."""

    def __init__(self, runs, stacked):
        self.cfg, self.xp, self.mcfg = runs[0].cfg, runs[0].xp, runs[0].mcfg
        self.runs = tuple(runs)
        if stacked:
            self._stack([run.params for run in runs], [run.opt.state_dict() for run in runs])
            self.runs = tuple(run._replace(params=MemberParams(self, run.cfg.seed),
                                           opt=MemberOptimizer(self, run.cfg.seed))
                              for run in runs)
        else:
            (run,) = runs
            self.seeds, self.lead = [run.cfg.seed], ()
            self.params, self.opt = run.params, run.opt

    def _stack(self, params_list, states):
        """Stack one-model params and optimizer states (of self.runs, in order): (G, ...)
        arrays, one optimizer; sets the members' `seeds` (their order in the stack) and
        `lead`."""
        self.seeds = [run.cfg.seed for run in self.runs]
        self.lead = (len(self.seeds),)
        self.params = stack_params(params_list)
        self.opt = make_optimizer(self.cfg.optimizer, self.params, lr=self.cfg.lr, lead=self.lead)
        self.opt.load_state_dict(stack_state_dicts(states))

    def position(self, seed):
        return self.seeds.index(seed)

    def drop(self, run):
        """Take a member that ended out of the stack; the others go on (stacked again)."""
        keep = tuple(r for r in self.runs if r is not run)
        params = [dict(r.params) for r in keep]        # views of the old stack, copied by _stack
        states = [r.opt.state_dict() for r in keep]
        self.runs = keep
        if self.lead and keep:
            self._stack(params, states)

    def batches(self, step):
        """Each member's host batch of `step`, by seed (runs in the prefetch thread; members
        only leave, so a batch drawn before one left still holds every member's)."""
        return {run.cfg.seed: batch_for_step(run, step) for run in self.runs}

    def train_on_batch(self, batches, stats):
        """One optimizer step of every member on its batch (step.train_step; the members'
        batches stacked along the model axis), and each member's sums into stats[seed]."""
        lead = self.lead
        if lead:
            batch = tuple(np.stack(part) for part in zip(*(batches[s] for s in self.seeds)))
        else:
            batch = batches[self.cfg.seed]
        loss, gnorm, logits, y, inst = train_step(self.params, self.opt, batch, self.mcfg,
                                                  self.cfg.clip, self.xp, lead)
        for i, seed in enumerate(self.seeds):
            if lead:
                stats[seed].add(loss[i], gnorm[i], logits[i, ...], y[i, ...], inst[i, ...])
            else:
                stats[seed].add(loss, gnorm, logits, y, inst)


class MemberParams(Mapping):
    """One member's params, read from the stack: stack.params[k][its position], a view."""

    def __init__(self, stack, seed):
        self.stack, self.seed = stack, seed

    def __getitem__(self, key):
        return self.stack.params[key][self.stack.position(self.seed), ...]

    def __iter__(self):
        return iter(self.stack.params)

    def __len__(self):
        return len(self.stack.params)


class MemberOptimizer:
    """One member's optimizer state, read from the stack's (a one-model state dict)."""

    def __init__(self, stack, seed):
        self.stack, self.seed = stack, seed

    def state_dict(self):
        return model_state_dict(self.stack.opt.state_dict(), self.stack.position(self.seed))
