"""Attributes of a handwritten digit computed from its pixels, for captions that name or leave open
how a digit is drawn.

With captions that name only the digit, the conditioning space encodes nothing but the class, and
noise on a prompt either stays within one digit's phrasings (drawn alike) or crosses to another
digit. Pretraining on captions that sometimes name these attributes ("a handwritten three bold
rightward") gives the plain prompt neighbours that mean something, which prompt noise can reach.
Each attribute is binned into terciles within its digit class, each with a word; a caption names
each attribute or leaves it out independently of its tercile, so that an unnamed attribute reads
as "any" and the plain prompt keeps the whole variety of its digit.
"""

from __future__ import annotations

from itertools import product

import numpy as np

# (attribute, words of its low, middle and high tercile)
ATTRIBUTES = (("thickness", ("thin", "regular", "bold")), ("slant", ("leftward", "upright", "rightward")),
              ("size", ("small", "medium", "large")))
LOW, MIDDLE, HIGH = 0, 1, 2
UNNAMED = 3  # a level that a caption leaves out
# every combination of one level or UNNAMED per attribute: what a caption can say about an image
LEVEL_COMBINATIONS = list(product(range(UNNAMED + 1), repeat=len(ATTRIBUTES)))


def attribute_values(images: np.ndarray) -> np.ndarray:
    """(N, 3) raw attributes of images (N, 1, H, W) in [0, 1], with the ink as weights w = x / sum(x):
    thickness = sum(x) / spread (ink per unit of extent), slant = -cov(col, row) / var(row) (rows
    grow downward, so a stroke leaning right has a negative covariance), size = spread =
    sqrt(var(col) + var(row))."""
    ink = images[:, 0].astype(np.float64)
    rows, cols = np.mgrid[0 : ink.shape[1], 0 : ink.shape[2]]
    mass = ink.sum(axis=(1, 2))
    w = ink / np.maximum(mass, 1e-12)[:, None, None]
    mean_r, mean_c = (w * rows).sum(axis=(1, 2)), (w * cols).sum(axis=(1, 2))
    dr, dc = rows - mean_r[:, None, None], cols - mean_c[:, None, None]
    var_r, var_c, cov = (w * dr**2).sum(axis=(1, 2)), (w * dc**2).sum(axis=(1, 2)), (w * dr * dc).sum(axis=(1, 2))
    spread = np.sqrt(var_r + var_c)
    return np.stack([mass / np.maximum(spread, 1e-12), -cov / np.maximum(var_r, 1e-12), spread], axis=1)


def attribute_levels(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, 3) tercile of each attribute within the image's digit class: LOW, MIDDLE or HIGH."""
    values = attribute_values(images)
    levels = np.full(values.shape, MIDDLE, dtype=np.int64)
    for digit in np.unique(labels):
        mine = labels == digit
        for a in range(values.shape[1]):
            low, high = np.quantile(values[mine, a], [1 / 3, 2 / 3])
            levels[mine & (values[:, a] <= low), a] = LOW
            levels[mine & (values[:, a] > high), a] = HIGH
    return levels


def attribute_words(levels: tuple[int, ...] | np.ndarray) -> list[str]:
    """The words naming ``levels`` (one per attribute: LOW, MIDDLE, HIGH, or UNNAMED for none)."""
    return [words[int(level)] for (_, words), level in zip(ATTRIBUTES, levels) if level != UNNAMED]


def caption(phrasing: str, levels) -> str:
    """A digit's phrasing followed by the words of its named attribute levels."""
    return " ".join([phrasing, *attribute_words(levels)])


def pretraining_captions(phrasings: list[str]) -> list[str]:
    """Every caption pretraining can give: each phrasing with each combination of named levels
    (``LEVEL_COMBINATIONS``), phrasing by phrasing."""
    return [caption(p, levels) for p in phrasings for levels in LEVEL_COMBINATIONS]
