"""The images a run's episodes are drawn from: Omniglot for training and testing (with the
experiment's augmentation), miniMNIST for zero-shot evaluation.   [FLMN §5.2-5.4]

`cfg` is a run's configuration (runs.config.TrainConfig); only the fields named in each
docstring are read.
"""
import numpy as np

from .augment import rotate_classes_90
from .episodes import EpisodeSource
from .files import DataError
from .mnist import load_mini_mnist
from .omniglot import load_omniglot, load_omniglot_full


def omniglot_data(cfg, data_dir):
    """(images, augment): the run's Omniglot images (n, 20, 400) and the sample_episodes keyword
    arguments of its experiment (Experiment II: full-resolution images, rotated and shifted).
    With --rotations90 every class is also there turned by 90/180/270 degrees, as class
    i + k * 1623 (augment.rotate_classes_90); class ids below 1623 are the plain characters.
    Reads cfg.experiment and cfg.rotations90."""
    images = load_omniglot(data_dir).images
    full = load_omniglot_full(data_dir) if cfg.experiment == 2 else None
    if cfg.rotations90:
        images = rotate_classes_90(images)
        full = None if full is None else rotate_classes_90(full)
    return images, {"full_images": full, "augment": cfg.experiment == 2}


def mnist_source(cfg, data_dir):
    """EpisodeSource over the 10 miniMNIST digits (20 seeded images each, no augmentation).
    Reads cfg.classes and cfg.samples; DataError if miniMNIST is too small for those episodes."""
    images = load_mini_mnist(data_dir)
    if cfg.classes > images.shape[0] or cfg.samples > images.shape[1]:
        raise DataError(f"miniMNIST has {images.shape[0]} digits of {images.shape[1]} images; "
                        f"this run's episodes need {cfg.classes} classes of {cfg.samples}")
    return EpisodeSource(images, np.arange(images.shape[0]), {})
