"""Class splits: which Omniglot characters train and which are held out.   [FLMN §5; docs/model.md]

'paper': a seeded permutation of all 1623 characters, 1209 for training and 414 for testing.
'background': the dataset authors' split, the 964 background characters train and the 659
evaluation characters test. Class ids index load_omniglot's images (character id - 1).
"""
import numpy as np

SPLITS = ("paper", "background")


def paper_split(seed, n_classes=1623, n_train=1209):
    """The paper's split: a seeded permutation of all characters, n_train for training and the
    rest for testing (1209 / 414).  -> (train_ids, test_ids), sorted int64."""
    if not 0 < n_train < n_classes:
        raise ValueError(f"n_train={n_train} must be between 1 and n_classes-1={n_classes - 1}")
    perm = np.random.default_rng(seed).permutation(n_classes)
    return np.sort(perm[:n_train]).astype(np.int64), np.sort(perm[n_train:]).astype(np.int64)


def background_split(n_background=964, n_classes=1623):
    """The dataset authors' split: background classes train, evaluation classes test."""
    return np.arange(n_background, dtype=np.int64), np.arange(n_background, n_classes, dtype=np.int64)


def make_split(name, seed, n_classes=1623, n_train=1209, n_background=964):
    """(train_ids, test_ids) for split `name` in SPLITS ('background' ignores the seed)."""
    if name == "paper":
        return paper_split(seed, n_classes, n_train)
    if name == "background":
        return background_split(n_background, n_classes)
    raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
