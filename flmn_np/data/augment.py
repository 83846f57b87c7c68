"""Experiment II augmentation: rotate and shift every image at 105x105, then downscale.   [FLMN §5.3]

Each image gets its own angle ~ U[-pi/16, pi/16] and shifts dx, dy ~ U[-10, 10] pixels. The
forward map, in (x = column, y = row) pixel coordinates about the centre pixel c = (52, 52), is

    p' = R(angle) (p - c) + c + (dx, dy),    R = [[cos, -sin], [sin, cos]]

(with y pointing down, a positive angle turns the image clockwise on screen). Shifts are rounded
to whole pixels (1/5 of a pixel of the 20x20 image). Ink moved outside the 105x105 frame is lost.

How: the rotation is three shears, R = X(-tan(a/2)) Y(sin a) X(-tan(a/2)) (Paeth 1986), each a
whole-pixel shift of every row (or column) by its own amount. A row shift is one fancy-indexing
copy of a sliding-window view, for all images at once, so a batch of 800 images costs a few
copies instead of a per-pixel gather; nearest-neighbour shears move pixels without holes or
duplicates. Then images.downscale, the same Pillow-LANCZOS matrix as the plain images, so angle 0
and shift 0 give back the plain 20x20 image exactly.

Santoro et al.'s optional extra classes (90/180/270-degree rotations): rotate_classes_90.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .images import downscale

MAX_ANGLE = np.pi / 16      # radians
MAX_SHIFT = 10.0            # pixels at 105x105


def sample_params(n, rng, max_angle=MAX_ANGLE, max_shift=MAX_SHIFT):
    """angles (n,) ~ U[-max_angle, max_angle], shifts (n, 2) = (dx, dy) ~ U[-max_shift, max_shift].
    Draws angles first, then shifts, from the caller's Generator."""
    angles = rng.uniform(-max_angle, max_angle, size=n)
    shifts = rng.uniform(-max_shift, max_shift, size=(n, 2))
    return angles, shifts


def shift_rows(a, shifts, out_len, offset=0):
    """out[k, r, j] = a[k, r, j + offset - shifts[k, r]], zero where that falls outside a.

    a (n, R, W) uint8/bool;  shifts (n, R) int  ->  out (n, R, out_len), same dtype.
    The row is padded with zeros, then one start per row is picked from a sliding-window view.
    """
    n, R, W = a.shape
    start = offset - shifts                                   # (n, R) start of each window in a
    pad_left = max(0, -int(start.min()))
    pad_right = max(0, int(start.max()) + out_len - W)
    padded = np.zeros((n * R, pad_left + W + pad_right), dtype=a.dtype)
    padded[:, pad_left:pad_left + W] = a.reshape(n * R, W)
    windows = sliding_window_view(padded, out_len, axis=1)   # (n*R, n_starts, out_len), a view
    picked = windows[np.arange(n * R), (start + pad_left).reshape(-1)]
    return picked.reshape(n, R, out_len)


def warp(images, angles, shifts):
    """Rotate by `angles` and shift by round(`shifts`), at full resolution.

    images (n, H, H) bool/uint8;  angles (n,) radians;  shifts (n, 2) pixels (dx, dy)
    ->  (n, H, H) same dtype.   p' = R(angle) (p - c) + c + d, nearest-neighbour three-shear.
    """
    n, H, _ = images.shape
    c = (H - 1) // 2
    alpha = -np.tan(np.asarray(angles) / 2)[:, None]                 # (n, 1) x-shear factor
    beta = np.sin(np.asarray(angles))[:, None]                       # (n, 1) y-shear factor
    dx, dy = (np.rint(np.asarray(shifts)[:, i]).astype(np.int64)[:, None] for i in (0, 1))
    y = np.arange(H) - c                                             # row coordinates
    # 1. x-shear: row y moves by round(alpha y); keep every column (width H + 2 m).
    s1 = np.rint(alpha * y).astype(np.int64)                         # (n, H)
    m = int(np.abs(s1).max())
    a = shift_rows(images, s1, H + 2 * m, offset=-m)                 # (n, H, H+2m), x = j - m
    # 2. y-shear: column x moves down by round(beta x) + dy; only rows of the final frame matter.
    x = np.arange(H + 2 * m) - m - c                                 # column coordinates
    s2 = np.rint(beta * x).astype(np.int64) + dy                     # (n, H+2m)
    a = shift_rows(np.ascontiguousarray(a.transpose(0, 2, 1)), s2, H)    # (n, H+2m, H)
    # 3. x-shear again on the rotated row coordinate (the row before the dy shift), plus dx,
    #    cropping to the final H columns: together  T_(dx,dy) X Y X,  i.e. the shift comes last.
    s3 = np.rint(alpha * (y - dy)).astype(np.int64) + dx             # (n, H)
    return shift_rows(np.ascontiguousarray(a.transpose(0, 2, 1)), s3, H, offset=m)


def augment_images(images, rng, max_angle=MAX_ANGLE, max_shift=MAX_SHIFT, chunk=64):
    """images (n, 105, 105) bool  ->  (n, 400) float32: each randomly rotated and shifted
    (sample_params from `rng`), then downscaled like the plain images. Works through `chunk`
    images at a time so the temporaries stay in cache (about 2x faster than all at once)."""
    n = images.shape[0]
    angles, shifts = sample_params(n, rng, max_angle, max_shift)
    parts = [downscale(warp(images[i:i + chunk], angles[i:i + chunk], shifts[i:i + chunk]))
             for i in range(0, n, chunk)]
    return np.concatenate(parts)


def rotate_classes_90(images):
    """Santoro et al.'s extra classes: each class also at 90, 180 and 270 degrees.

    images (n_classes, n_drawers, H, H) or (n_classes, n_drawers, H*H) (square, flattened)
    ->  (4 n_classes, n_drawers, ...): class k*n_classes + i is class i turned k quarter turns
    counter-clockwise (np.rot90). For 20x20 images this equals downscaling the turned 105x105
    image, since the Lanczos matrix is symmetric under flipping. Use rotated_class_ids to keep
    a split's rotations on the same side.
    """
    flat = images.ndim == 3
    if flat:
        side = int(round(np.sqrt(images.shape[-1])))
        images = images.reshape(*images.shape[:2], side, side)
    turned = np.concatenate([np.rot90(images, k, axes=(-2, -1)) for k in range(4)])
    return turned.reshape(turned.shape[0], turned.shape[1], -1) if flat else turned


def rotated_class_ids(class_ids, n_classes):
    """The ids of class_ids and their three rotations in rotate_classes_90's numbering."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    return np.concatenate([class_ids + k * n_classes for k in range(4)])
