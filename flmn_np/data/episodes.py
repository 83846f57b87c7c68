"""One-shot episodes: sampling, batches, instance counts, and a one-batch prefetcher.
(The label input, onehot(y[t-1]) at step t, is core.ops.previous_label_onehot.)

The one-shot task [FLMN §5; docs/model.md]: an episode draws C classes, gives them a fresh random
assignment of the labels 0..C-1, and presents S samples (distinct drawers) of each class in random
order: T = C*S steps, t = 1..T. At step t the model sees x_t and the one-hot label of step t-1
(zeros at t = 1).

Training, validation and evaluation all take their batches from draw_batch over an EpisodeSource
(the images and the classes allowed; data.sources builds them for a run).

Everything random comes from the Generator the caller passes in (the trainer makes one per step,
default_rng((seed, step))), so a batch depends only on its step: no hidden RNG state here.
"""
import queue
import threading
from typing import NamedTuple

import numpy as np

from .augment import augment_images


def _random_orderings(rng, shape, n):
    """Independent uniform random permutations of range(n), one per index of `shape`:
    (*shape, n) int64, from the argsort of uniform keys."""
    return np.argsort(rng.random((*shape, n)), axis=-1)


def sample_episodes(images, class_ids, batch_size, n_classes, samples_per_class, rng,
                    full_images=None, augment=False):
    """A batch of episodes.   [FLMN §5]

    images       (n_all_classes, n_drawers, 400) float32, the plain 20x20 images
    class_ids    (K,) int, the classes episodes may use (e.g. a split's train ids), K >= C
    rng          np.random.Generator, the only source of randomness
    full_images  (n_all_classes, n_drawers, 105, 105) bool, needed only when augment is true
    augment      if true, every image is drawn from full_images, rotated and shifted
                 (augment.augment_images) and downscaled: Experiment II
    ->  x (B, T, 400) float32, y (B, T) int64 in 0..C-1, T = C*S

    Per episode: the C classes are the first C of a random ordering of class_ids, and class i of
    that ordering gets label i (a uniformly random ordered sample, so the label assignment is a
    fresh uniform permutation); S distinct drawers per class; the T presentations in a random
    order. Random draws, in this order: class keys (B, K), drawer keys (B, C, n_drawers),
    presentation keys (B, T), then the augmentation parameters (B*T angles, then B*T x 2 shifts).
    """
    source = full_images if augment else images
    if source is None:
        raise ValueError("augment=True needs full_images (omniglot.load_omniglot_full)")
    class_ids = np.asarray(class_ids, dtype=np.int64)
    n_drawers = source.shape[1]
    if not 0 < n_classes <= class_ids.size:
        raise ValueError(f"n_classes={n_classes} needs 1..{class_ids.size} (the classes allowed)")
    if not 0 < samples_per_class <= n_drawers:
        raise ValueError(f"samples_per_class={samples_per_class} needs 1..{n_drawers} (drawers per class)")
    B, C, S = batch_size, n_classes, samples_per_class
    T = C * S
    classes = class_ids[_random_orderings(rng, (B,), class_ids.size)[:, :C]]    # (B, C); label i -> classes[:, i]
    drawers = _random_orderings(rng, (B, C), n_drawers)[:, :, :S]               # (B, C, S)
    order = _random_orderings(rng, (B,), T)                                     # (B, T) presentation order
    y = order // S                                                              # (B, T) label of each step
    cls = np.take_along_axis(classes, y, axis=1)                                # (B, T) class of each step
    drw = np.take_along_axis(drawers.reshape(B, T), order, axis=1)              # (B, T) drawer of each step
    if not augment:
        return images[cls, drw], y
    x = augment_images(full_images[cls, drw].reshape(B * T, *full_images.shape[2:]), rng)
    return x.reshape(B, T, -1), y


def instance_index(y):
    """k-1 for the k-th presentation of its label within the episode (0-based), per step.

    y (B, T) int  ->  (B, T) int64;  out[b, t] = #{s < t : y[b, s] == y[b, t]}.
    Per-instance accuracy (1st, 2nd, ... presentation) groups steps by this.
    """
    T = y.shape[1]
    same = y[:, :, None] == y[:, None, :]                                  # (B, T, T) [t, s]
    earlier = np.tri(T, T, k=-1, dtype=bool)                               # s < t
    return np.sum(same & earlier, axis=-1, dtype=np.int64)


class EpisodeSource(NamedTuple):
    """Where episodes come from: an image array, the class ids to draw from, and the
    sample_episodes keyword arguments of the experiment (full_images, augment)."""
    images: np.ndarray
    class_ids: np.ndarray
    augment: dict


def draw_batch(source, batch_size, classes, samples, rng):
    """A batch of episodes on the host: x (B, T, 400) float32, y (B, T) int64 and the 0-based
    presentation index of each step (B, T); all randomness from `rng`."""
    x, y = sample_episodes(source.images, source.class_ids, batch_size, classes, samples, rng,
                           **source.augment)
    return x, y, instance_index(y)


_STOP = object()


class Prefetcher:
    """Make batch step+1 in one background thread while the caller works on batch step.

    make_batch(step) must depend only on `step` (e.g. it builds default_rng((seed, step))), so
    the batches are the same with or without prefetching. Iterating yields (step, batch) for
    step = start, start+1, ... (stop excluded; forever if stop is None). get(step) returns one
    batch (prefetched when it is the one expected next). An exception raised by make_batch is
    re-raised in the caller when that batch is asked for. close() (or leaving a `with` block)
    stops the thread; it is safe to call twice.

        with Prefetcher(make_batch, start, n_steps) as batches:
            for step, (x, y, inst) in batches:      # make_batch = draw_batch's (x, y, inst)
                ...
    """

    def __init__(self, make_batch, start=0, stop=None, enabled=True):
        self.make_batch, self.start, self.stop, self.enabled = make_batch, start, stop, enabled
        self._requests = queue.Queue()
        self._results = queue.Queue()
        self._pending = None          # the step the worker was asked to make, not yet collected
        self._thread = None
        self._closed = False

    def _work(self):
        while True:
            step = self._requests.get()
            if step is _STOP:
                return
            try:
                self._results.put((step, True, self.make_batch(step)))
            except BaseException as e:  # handed to the caller by get()
                self._results.put((step, False, e))

    def _submit(self, step):
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="flmn-prefetch", daemon=True)
            self._thread.start()
        self._requests.put(step)
        self._pending = step

    def _collect(self):
        """Wait for the pending batch: (step, ok, batch or exception)."""
        self._pending = None
        return self._results.get()

    def get(self, step):
        """The batch for `step`; then starts making step+1 (unless past stop) in the background."""
        if self._closed:
            raise RuntimeError("Prefetcher is closed")
        prefetched = self._collect() if self._pending is not None else None
        if prefetched is not None and prefetched[0] != step:
            prefetched = None            # asked out of order: drop the prefetched batch
        if self.enabled and (self.stop is None or step + 1 < self.stop):
            self._submit(step + 1)
        if prefetched is None:
            return self.make_batch(step)
        _, ok, value = prefetched
        if not ok:
            raise value
        return value

    def __iter__(self):
        step = self.start
        while self.stop is None or step < self.stop:
            yield step, self.get(step)
            step += 1

    def close(self):
        """Stop the worker (after the batch it may be making) and drop any prefetched batch."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._requests.put(_STOP)
            self._thread.join()
            self._thread = None
        self._pending = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
