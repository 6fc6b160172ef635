"""Testbed data from scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, no download).

Writes a prompt dataset (several phrasings per digit; training prompts and held-out evaluation
prompts whose phrasings never appear in training) and the images split for training/testing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits

from drift.data.prompts import read_prompts, split_prompts
from drift.registry import CORPORA, REFERENCES
from drift.scoring.coverage import ReferenceSet
from drift.testbed.attributes import pretraining_captions
from drift.testbed.classifier import DIGIT_WORDS, digit_from_prompt

TRAIN_TEMPLATES = [
    "a handwritten digit {word}",
    "the number {num}",
    "a hand-drawn {num}",
    "a handwritten {word}",
    "the digit {word}",
    "number {word}",
    "a sketch of the number {word}",
    "a scribbled {num}",
]
EVAL_TEMPLATES = [
    "a drawing of the digit {word}",
    "the handwritten number {num}",
    "a {word} written by hand",
]


def prompt_table() -> pd.DataFrame:
    """Columns prompt, digit, split ('train' or 'eval'); eval prompts use held-out phrasings."""
    # Ordered phrasing by phrasing, so that the first ten prompts of a split cover all ten digits.
    rows = [
        {"prompt": template.format(word=DIGIT_WORDS[d], num=d), "digit": d, "split": split}
        for split, templates in (("train", TRAIN_TEMPLATES), ("eval", EVAL_TEMPLATES))
        for template in templates
        for d in range(10)
    ]
    return pd.DataFrame(rows)


def digit_images(test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Images in [0, 1] (N, 1, 8, 8) float32, labels, and a stratified train/test split flag."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for d in range(10):
        idx = np.flatnonzero(labels == d)
        is_test[rng.choice(idx, size=int(round(test_fraction * len(idx))), replace=False)] = True
    return {"images": images, "labels": labels, "is_test": is_test}


def build_data(out_dir: str | Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, Path]:
    out = Path(out_dir)
    (out / "testbed").mkdir(parents=True, exist_ok=True)
    prompts_path, images_path = out / "prompts.csv", out / "testbed" / "digits.npz"
    prompt_table().to_csv(prompts_path, index=False)
    np.savez_compressed(images_path, **digit_images(test_fraction, seed))
    return {"prompts": prompts_path, "images": images_path}


def load_images(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@REFERENCES.register("digit_images")
def digit_reference(images: str = "data/testbed/digits.npz") -> ReferenceSet:
    """The real digits of each class (all 1,797, train and test), the class being the digit a
    prompt names: what the coverage metrics compare a digit's samples with."""
    data = load_images(images)
    return ReferenceSet(classify=digit_from_prompt,
                        images={d: torch.from_numpy(data["images"][data["labels"] == d]) for d in range(10)})


@CORPORA.register("testbed_captions")
def testbed_captions(prompts: str = "data/prompts.csv", split: str = "train") -> list[list[str]]:
    """Every caption the testbed's base model was pretrained on, one group per training phrasing: the
    phrasing with each combination of named attribute levels (drift.testbed.attributes), so that
    the groups differ by their digit and phrasing and the captions of a group by attribute words."""
    return [pretraining_captions([p]) for p in split_prompts(read_prompts(prompts), split)]
