"""flmn_np.data.episodes: episode structure, label input, instance index, seeding, batches from an
EpisodeSource, and the Prefetcher."""
import threading
import time

import numpy as np
import pytest

from flmn_np.data.episodes import EpisodeSource, Prefetcher, draw_batch, instance_index, sample_episodes

N_CLASSES, N_DRAWERS = 30, 20


@pytest.fixture(scope="module")
def images():
    """Synthetic (30, 20, 400) images that say where they came from: x[0] = class, x[1] = drawer."""
    x = np.zeros((N_CLASSES, N_DRAWERS, 400), dtype=np.float32)
    x[:, :, 0] = np.arange(N_CLASSES)[:, None]
    x[:, :, 1] = np.arange(N_DRAWERS)[None, :]
    return x


def _sample(images, seed, class_ids=None, B=8, C=5, S=10):
    ids = np.arange(N_CLASSES) if class_ids is None else class_ids
    return sample_episodes(images, ids, B, C, S, np.random.default_rng(seed))


def test_shapes_and_dtypes(images):
    x, y = _sample(images, 0, B=4, C=5, S=10)
    assert x.shape == (4, 50, 400) and x.dtype == np.float32
    assert y.shape == (4, 50) and y.dtype == np.int64


def test_episode_structure(images):
    class_ids = np.array([1, 4, 5, 8, 13, 21, 22, 29])
    x, y = _sample(images, 1, class_ids, B=16, C=5, S=6)
    cls, drw = x[..., 0].astype(int), x[..., 1].astype(int)
    for b in range(16):
        assert np.bincount(y[b], minlength=5).tolist() == [6] * 5          # labels 0..C-1, S each
        label_class = {}
        for label, c in zip(y[b], cls[b]):
            assert label_class.setdefault(label, c) == c                    # one class per label
        assert len(set(label_class.values())) == 5                          # C distinct classes
        assert set(label_class.values()) <= set(class_ids.tolist())         # only allowed classes
        for c in set(label_class.values()):
            assert len(set(drw[b][cls[b] == c])) == 6                       # S distinct drawers


def test_labels_and_orders_vary_across_episodes(images):
    x, y = _sample(images, 2, B=64, C=5, S=10)
    cls = x[..., 0].astype(int)
    # rank of each label's class among the episode's classes: a permutation of 0..4 per episode
    perms = set()
    for b in range(64):
        classes_by_label = [cls[b][y[b] == k][0] for k in range(5)]
        perms.add(tuple(np.argsort(classes_by_label)))
    assert len(perms) > 20                                   # 120 possible; fresh every episode
    assert len({tuple(row) for row in y}) == 64              # presentation orders differ
    assert len({frozenset(cls[b]) for b in range(64)}) > 50  # class sets differ


def test_same_seed_same_batch_and_different_seed_differs(images):
    x1, y1 = _sample(images, 5)
    x2, y2 = _sample(images, 5)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, y3 = _sample(images, 6)
    assert not np.array_equal(x1, x3)


def test_bad_sizes_raise(images):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="samples_per_class"):
        sample_episodes(images, np.arange(N_CLASSES), 2, 5, 21, rng)
    with pytest.raises(ValueError, match="n_classes"):
        sample_episodes(images, np.arange(3), 2, 5, 2, rng)
    with pytest.raises(ValueError, match="full_images"):
        sample_episodes(images, np.arange(N_CLASSES), 2, 5, 2, rng, augment=True)


def test_augmented_sampling_uses_full_images():
    full = np.zeros((6, 20, 105, 105), dtype=bool)
    for c in range(6):
        full[c, :, 40:65, 40:65] = c % 2 == 0          # even classes: a square, odd: empty
    small = np.zeros((6, 20, 400), dtype=np.float32)
    x, y = sample_episodes(small, np.arange(6), 4, 3, 5, np.random.default_rng(0),
                           full_images=full, augment=True)
    x_plain, y_plain = sample_episodes(small, np.arange(6), 4, 3, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(y, y_plain)                      # same draws before augmenting
    assert x.shape == (4, 15, 400) and x.dtype == np.float32
    ink = x.sum(axis=-1)
    assert ((ink > 5) | (ink == 0)).all() and (ink > 5).any()      # squares moved, not lost


def test_instance_index_example_and_property(images):
    y = np.array([[2, 0, 2, 2, 0, 1]])
    np.testing.assert_array_equal(instance_index(y), [[0, 0, 1, 2, 1, 0]])
    _, y = _sample(images, 3, B=8, C=5, S=10)
    k = instance_index(y)
    assert k.dtype == np.int64
    for b in range(8):
        for label in range(5):
            np.testing.assert_array_equal(k[b][y[b] == label], np.arange(10))


# ----------------------------------------------------------------------------- Prefetcher

def _make_batch(step):
    rng = np.random.default_rng((123, step))
    return step, rng.random(3)


def _collect(pf, n):
    return [(s, b[0], b[1].copy()) for s, b in zip(range(n), pf)]


def test_draw_batch_draws_from_the_source_classes_with_instance_index(images):
    source = EpisodeSource(images, np.array([2, 3, 7, 11, 19]), {})
    x, y, inst = draw_batch(source, 6, 3, 4, np.random.default_rng(5))
    x0, y0 = sample_episodes(images, source.class_ids, 6, 3, 4, np.random.default_rng(5))
    np.testing.assert_array_equal(x, x0)                       # the same draws, in the same order
    np.testing.assert_array_equal(y, y0)
    assert set(np.unique(x[..., 0]).astype(int)) <= {2, 3, 7, 11, 19}
    np.testing.assert_array_equal(inst, instance_index(y))
    assert inst.max() == 3 and (np.sort(inst, axis=1) == np.repeat(np.arange(4), 3)).all()


@pytest.mark.parametrize("enabled", [True, False])
def test_prefetcher_matches_plain_iteration(enabled):
    plain = [_make_batch(s) for s in range(3, 10)]
    with Prefetcher(_make_batch, start=3, stop=10, enabled=enabled) as pf:
        got = list(pf)
    assert [s for s, _ in got] == list(range(3, 10))
    for (step, (s, r)), (ps, pr) in zip(got, plain):
        assert step == s == ps
        np.testing.assert_array_equal(r, pr)


def test_prefetcher_get_out_of_order_and_overlap():
    started = []

    def slow(step):
        started.append(step)
        time.sleep(0.02)
        return _make_batch(step)

    with Prefetcher(slow) as pf:
        a = pf.get(0)
        time.sleep(0.05)
        assert 1 in started                                  # step 1 was made in the background
        b = pf.get(5)                                        # out of order: made directly
        np.testing.assert_array_equal(b[1], _make_batch(5)[1])
        np.testing.assert_array_equal(pf.get(6)[1], _make_batch(6)[1])
    np.testing.assert_array_equal(a[1], _make_batch(0)[1])


def test_prefetcher_reraises_worker_errors_in_order():
    def flaky(step):
        if step == 2:
            raise KeyError("bad step 2")
        return step

    seen = []
    with Prefetcher(flaky, start=0, stop=5) as pf:
        with pytest.raises(KeyError, match="bad step 2"):
            for step, batch in pf:
                seen.append(batch)
    assert seen == [0, 1]


def test_prefetcher_close_stops_thread_and_is_idempotent():
    before = threading.active_count()
    pf = Prefetcher(_make_batch)
    pf.get(0)
    assert threading.active_count() == before + 1
    pf.close()
    pf.close()
    assert threading.active_count() == before
    with pytest.raises(RuntimeError, match="closed"):
        pf.get(1)
