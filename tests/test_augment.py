"""flmn_np.data.augment: parameter ranges, geometry on synthetic images, identity, 90-degree classes."""
import numpy as np

from flmn_np.data import augment
from flmn_np.data.images import downscale
from flmn_np.data.omniglot import load_omniglot, load_omniglot_full
from flmn_np.data.splits import paper_split

C = 52  # centre pixel of a 105x105 image


def _dot(row, col):
    img = np.zeros((1, 105, 105), dtype=bool)
    img[0, row, col] = True
    return img


def _ink_xy(img):
    """(x, y) = (column, row) coordinates of the ink pixels of one (105, 105) image."""
    rows, cols = np.nonzero(img)
    return np.stack([cols, rows], axis=1).astype(float)


def test_sample_params_ranges():
    angles, shifts = augment.sample_params(20000, np.random.default_rng(0))
    assert angles.shape == (20000,) and shifts.shape == (20000, 2)
    assert np.abs(angles).max() <= np.pi / 16 and np.abs(shifts).max() <= 10
    assert angles.min() < -0.95 * np.pi / 16 and angles.max() > 0.95 * np.pi / 16   # the full range
    assert shifts.min() < -9.5 and shifts.max() > 9.5


def test_dot_at_centre_moves_by_the_shift_only():
    rng = np.random.default_rng(1)
    angles, shifts = augment.sample_params(200, rng)
    out = augment.warp(np.repeat(_dot(C, C), 200, axis=0), angles, shifts)
    for k in range(200):
        (x, y), = _ink_xy(out[k])
        dx, dy = x - C, y - C
        assert abs(dx) <= 10 and abs(dy) <= 10
        assert (dx, dy) == tuple(np.rint(shifts[k]))


def test_dot_follows_the_forward_map():
    """p' = R(angle) (p - c) + c + d with R = [[cos, -sin], [sin, cos]] in (x, y) = (col, row)."""
    for angle, shift, (x0, y0) in [(0.15, (3, -4), (20, 0)), (-0.19, (-10, 10), (-15, 25)),
                                   (0.05, (0, 0), (30, -30))]:
        out = augment.warp(_dot(C + y0, C + x0), np.array([angle]), np.array([shift], dtype=float))
        (x, y), = _ink_xy(out[0]) - C
        ex = np.cos(angle) * x0 - np.sin(angle) * y0 + shift[0]
        ey = np.sin(angle) * x0 + np.cos(angle) * y0 + shift[1]
        assert abs(x - ex) <= 1.5 and abs(y - ey) <= 1.5


def test_line_rotation_within_range_and_close_to_drawn_angle():
    line = np.zeros((1, 105, 105), dtype=bool)
    line[0, C, C - 35:C + 36] = True                                  # horizontal, 71 px
    angles, shifts = augment.sample_params(100, np.random.default_rng(2))
    out = augment.warp(np.repeat(line, 100, axis=0), angles, shifts)
    for k in range(100):
        xy = _ink_xy(out[k])
        assert len(xy) == 71                                          # pixels are moved, never lost
        xy -= xy.mean(axis=0)
        _, _, vt = np.linalg.svd(xy, full_matrices=False)
        measured = np.arctan(vt[0, 1] / vt[0, 0])                     # direction of the line
        assert abs(measured) <= np.pi / 16 + 0.02
        assert abs(measured - angles[k]) < 0.03


def test_warp_by_zero_is_the_identity_and_keeps_dtype():
    imgs = np.random.default_rng(3).random((5, 105, 105)) < 0.1
    out = augment.warp(imgs, np.zeros(5), np.zeros((5, 2)))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, imgs)


def test_augment_images_with_zero_range_equals_plain_downscale():
    imgs = np.random.default_rng(4).random((70, 105, 105)) < 0.1
    out = augment.augment_images(imgs, np.random.default_rng(0), max_angle=0.0, max_shift=0.0)
    assert out.shape == (70, 400) and out.dtype == np.float32
    np.testing.assert_array_equal(out, downscale(imgs))


def test_the_authors_experiment_2_is_experiment_1_here():
    """The authors' code passes the angle bound pi/16 where degrees are read (about 0.2 degrees)
    and never applies the shift. Under the three-shear warp every such angle moves no pixel of a
    105x105 image: each shear moves a row or column by round(tan(a/2) y) or round(sin(a) x),
    |x|, |y| <= 52, which is 0 below 0.5 / 52 rad, and pi/16 degrees is 0.0034 rad."""
    max_angle = np.deg2rad(np.pi / 16)
    assert np.sin(max_angle) * C < 0.5
    imgs = np.random.default_rng(6).random((9, 105, 105)) < 0.3
    angles = np.linspace(-max_angle, max_angle, 9)
    np.testing.assert_array_equal(augment.warp(imgs, angles, np.zeros((9, 2))), imgs)
    out = augment.augment_images(imgs, np.random.default_rng(0), max_angle=max_angle, max_shift=0.0)
    np.testing.assert_array_equal(out, downscale(imgs))
    turned = augment.warp(imgs[:1], np.array([0.5 / C + 1e-3]), np.zeros((1, 2)))
    assert not np.array_equal(turned, imgs[:1])                       # a larger angle does move


def test_augment_images_is_seeded_and_in_range():
    imgs = np.random.default_rng(5).random((10, 105, 105)) < 0.1
    a = augment.augment_images(imgs, np.random.default_rng(9))
    np.testing.assert_array_equal(a, augment.augment_images(imgs, np.random.default_rng(9)))
    assert not np.array_equal(a, augment.augment_images(imgs, np.random.default_rng(10)))
    assert a.min() >= 0 and a.max() <= 1


def test_identity_augmentation_reproduces_real_plain_images(data_dir):
    plain = load_omniglot(data_dir, download=False).images
    full = load_omniglot_full(data_dir, download=False)
    ids = np.array([0, 500, 1622])
    same = augment.augment_images(full[ids, 3], np.random.default_rng(0), max_angle=0.0, max_shift=0.0)
    np.testing.assert_allclose(same, plain[ids, 3], atol=1e-6)
    moved = augment.augment_images(full[ids, 3], np.random.default_rng(0))
    assert np.abs(moved - plain[ids, 3]).mean() > 0.01                # a real change
    assert abs(moved.sum() - plain[ids, 3].sum()) < 0.2 * plain[ids, 3].sum()   # ink kept


def test_rotate_classes_90_full_and_small_agree():
    rng = np.random.default_rng(6)
    full = rng.random((3, 2, 105, 105)) < 0.1
    turned = augment.rotate_classes_90(full)
    assert turned.shape == (12, 2, 105, 105)
    np.testing.assert_array_equal(turned[:3], full)
    np.testing.assert_array_equal(turned[3 + 1, 0], np.rot90(full[1, 0]))
    np.testing.assert_array_equal(turned[9 + 2, 1], np.rot90(full[2, 1], 3))
    small_turned = augment.rotate_classes_90(downscale(full))    # (12, 2, 400)
    assert small_turned.shape == (12, 2, 400)
    np.testing.assert_allclose(small_turned, downscale(turned), atol=1e-5)


def test_rotated_class_ids_keep_splits_apart():
    train, test = paper_split(0, n_classes=50, n_train=40)
    rtrain, rtest = augment.rotated_class_ids(train, 50), augment.rotated_class_ids(test, 50)
    assert rtrain.size == 160 and rtest.size == 40
    assert np.intersect1d(rtrain, rtest).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([rtrain, rtest])), np.arange(200))
