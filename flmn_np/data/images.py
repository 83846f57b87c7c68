"""Image resizing: every image the models see is a 20x20 downscale, made the same way.

Images are downscaled with Pillow's LANCZOS filter (the antialiasing filter Pillow used to call
ANTIALIAS) on float images, applied as the equivalent (20, n) matrix `resize_matrix(n, 20)` taken
from Pillow once:

    small = clip(A @ img @ A.T, 0, 1)

Omniglot (105x105), miniMNIST (28x28) and the Experiment II augmentation all go through
`downscale`, so an augmentation by angle 0 and shift 0 gives back exactly the plain image.
"""
import functools

import numpy as np
from PIL import Image

IMAGE_SIZE = 20                       # side of the downscaled images: D = 20 * 20 = 400
FILTER = "lanczos"                    # Pillow resampling filter used for every downscale

_PIL_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


@functools.lru_cache(maxsize=None)
def resize_matrix(src, dst=IMAGE_SIZE, filt=FILTER):
    """A (dst, src) float32 matrix with  A @ v  equal to Pillow resizing a length-src signal to dst.

    Pillow resizes separably, so for a (src, src) float image:  resize(img) = A @ img @ A.T.
    Obtained by resizing the identity image (each column a basis vector) horizontally once.
    """
    eye = Image.fromarray(np.eye(src, dtype=np.float32), mode="F")
    resized = eye.resize((dst, src), resample=_PIL_FILTERS[filt])     # (src rows, dst cols)
    A = np.ascontiguousarray(np.asarray(resized, dtype=np.float32).T)  # (dst, src)
    A.flags.writeable = False
    return A


@functools.lru_cache(maxsize=None)
def resize_matrix_T(src, dst=IMAGE_SIZE, filt=FILTER):
    """resize_matrix(src, dst, filt).T as a contiguous (src, dst) array."""
    A_T = np.ascontiguousarray(resize_matrix(src, dst, filt).T)
    A_T.flags.writeable = False
    return A_T


def downscale(images, dst=IMAGE_SIZE, chunk=64):
    """images (..., n, n) bool/uint8/float in [0, 1]  ->  (..., dst*dst) float32 in [0, 1].

    small = clip(A @ img @ A.T, 0, 1) with A = resize_matrix(n, dst): Pillow's LANCZOS resize
    (clipped, since the Lanczos kernel's negative lobes can step slightly outside [0, 1]).
    Works through `chunk` images at a time so the float32 temporaries stay in cache, and uses
    per-image (stacked) matmuls: OpenBLAS keeps those single-threaded, whereas one big
    (m*n, n) @ (n, dst) product was 20x slower on a 2-core machine with threaded OpenBLAS.
    """
    lead, n = images.shape[:-2], images.shape[-1]
    A = resize_matrix(n, dst)
    A_T = resize_matrix_T(n, dst)
    images = images.reshape(-1, n, n)
    small = np.empty((images.shape[0], dst, dst), dtype=np.float32)
    for i in range(0, images.shape[0], chunk):
        block = np.asarray(images[i:i + chunk], dtype=np.float32)          # (m, n, n)
        rows = np.matmul(block, A_T)                                       # (m, n, dst)
        np.matmul(A, rows, out=small[i:i + chunk])                         # (m, dst, dst)
    np.clip(small, 0.0, 1.0, out=small)
    return small.reshape(*lead, dst * dst)
