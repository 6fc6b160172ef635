"""Prompt datasets: a CSV with a ``prompt`` column and a ``split`` column."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pandas as pd

from drift.errors import DriftError
from drift.registry import CORPORA

REQUIRED_COLUMNS = ("prompt", "split")
MAX_FILE_MB = 10.0
MIN_PROMPT_LENGTH, MAX_PROMPT_LENGTH = 3, 200  # characters; a run configuration may set others (data.*)


def normalize_prompt(text):
    """NFKC-normalised text without format characters (zero-width spaces and joiners, byte-order
    marks, bidirectional marks), so that what validation checks is what a person sees."""
    if not isinstance(text, str):
        return text
    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")


def read_prompts(path: str | Path, max_file_mb: float = MAX_FILE_MB) -> pd.DataFrame:
    """The prompt table with normalised prompts; a missing, oversized or unreadable file is a
    ``DriftError`` that says which."""
    path = Path(path)
    if path.is_dir():
        raise DriftError(f"prompt file {path} is a directory: give the CSV file itself")
    if not path.is_file():
        raise DriftError(f"prompt file {path} does not exist (for the digits testbed, run `dvc repro` first)")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        raise DriftError(f"prompt file {path} is {size_mb:.1f} MB, above the {max_file_mb:g} MB limit "
                         "(data.max_file_mb): is it the right file?")
    try:
        table = pd.read_csv(path, dtype=str, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DriftError(f"prompt file {path} is not valid UTF-8: {err}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DriftError(f"prompt file {path} is not a readable CSV: {err}") from None
    if "prompt" in table.columns:
        table["prompt"] = table["prompt"].map(normalize_prompt)
    return table


def split_prompts(table: pd.DataFrame, split: str) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DriftError(f"prompt table lacks column(s) {', '.join(missing)}")
    prompts = table.loc[table["split"] == split, "prompt"].tolist()
    if not prompts:
        raise DriftError(f"prompt table has no rows with split '{split}' (splits present: "
                         f"{', '.join(sorted(table['split'].unique()))})")
    return prompts


@CORPORA.register("prompt_file")
def prompt_file(path: str, split: str | None = None, group_by: str | None = None) -> list[list[str]]:
    """The prompts of a prompt CSV (those of ``split`` only, if given) as a corpus: one group, or one
    per value of the column ``group_by`` (e.g. the prompt each caption of a set of rewrites expands)."""
    table = read_prompts(path)
    if split is not None:
        split_prompts(table, split)  # says which splits there are if this one is not
        table = table[table["split"] == split]
    if group_by is None:
        return [table["prompt"].tolist()]
    if group_by not in table.columns:
        raise DriftError(f"prompt file {path} has no column '{group_by}' to group the corpus by")
    return [g["prompt"].tolist() for _, g in table.groupby(group_by, sort=False)]
