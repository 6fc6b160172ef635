"""Prompt datasets: a CSV with a ``prompt`` column and a ``split`` column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from drift.errors import DriftError

REQUIRED_COLUMNS = ("prompt", "split")


def read_prompts(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DriftError(f"prompt file {path} does not exist (for the digits testbed, run `dvc repro` first)")
    try:
        return pd.read_csv(path, dtype=str, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DriftError(f"prompt file {path} is not valid UTF-8: {err}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DriftError(f"prompt file {path} is not a readable CSV: {err}") from None


def split_prompts(table: pd.DataFrame, split: str) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DriftError(f"prompt table lacks column(s) {', '.join(missing)}")
    prompts = table.loc[table["split"] == split, "prompt"].tolist()
    if not prompts:
        raise DriftError(f"prompt table has no rows with split '{split}' (splits present: "
                         f"{', '.join(sorted(table['split'].unique()))})")
    return prompts
