"""Prompt-dataset validation with Great Expectations 1.x, and a report a person can read.

Checks: required columns, no nulls or blank prompts, no duplicate prompts, length bounds,
printable text (no control characters), known split values, and a minimum number of rows per
split. Every failed check is listed with a few offending rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from drift.errors import DriftError
from drift.prompts import REQUIRED_COLUMNS, read_prompts

EXAMPLES = 5


@dataclass
class CheckResult:
    name: str
    success: bool
    unexpected_count: int = 0
    examples: list[tuple[int | None, str]] = field(default_factory=list)  # (CSV line or None, value)


@dataclass
class ValidationReport:
    source: str
    rows: int
    checks: list[CheckResult]

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def to_text(self) -> str:
        head = (f"prompt dataset {self.source}: {self.rows} rows, "
                f"{len(self.checks) - len(self.failed())}/{len(self.checks)} checks passed")
        if self.success:
            return head + " - valid"
        lines = [head + " - INVALID"]
        for c in self.failed():
            lines.append(f"  FAILED {c.name}: {c.unexpected_count} offending row(s)")
            lines += [f"    line {row}: {_clip(value)!r}" if row is not None else f"    {value}" for row, value in c.examples]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "success": self.success,
                "checks": [c.__dict__ for c in self.checks]}


def _clip(value: str, width: int = 80) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def _expectations(min_len: int, max_len: int, splits: list[str]):
    import great_expectations as gx

    E = gx.expectations
    return [
        ("prompt is not null", E.ExpectColumnValuesToNotBeNull(column="prompt")),
        ("split is not null", E.ExpectColumnValuesToNotBeNull(column="split")),
        ("prompt is not blank", E.ExpectColumnValuesToNotMatchRegex(column="prompt", regex=r"^\s*$")),
        ("prompts are unique", E.ExpectColumnValuesToBeUnique(column="prompt")),
        (f"prompt length in [{min_len}, {max_len}]",
         E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=min_len, max_value=max_len)),
        ("prompt is printable text (no control characters)",
         E.ExpectColumnValuesToNotMatchRegex(column="prompt", regex=r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")),
        (f"split in {splits}", E.ExpectColumnValuesToBeInSet(column="split", value_set=splits)),
    ]


def _run_great_expectations(table: pd.DataFrame, expectations) -> list[CheckResult]:
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch = (context.data_sources.add_pandas("prompts").add_dataframe_asset("table")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": table}))
    suite = gx.ExpectationSuite(name="prompt_dataset")
    for name, expectation in expectations:
        expectation.meta = {"check": name}
        suite.add_expectation(expectation)
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    out = []
    for name, _ in expectations:
        r = by_name[name]
        rows = r.result.get("unexpected_index_list") or r.result.get("partial_unexpected_index_list") or []
        values = r.result.get("unexpected_list") or r.result.get("partial_unexpected_list") or []
        examples = [(int(i) + 2, str(v)) for i, v in list(zip(rows, values))[:EXAMPLES]]  # line 1 is the header
        out.append(CheckResult(name, bool(r.success), int(r.result.get("unexpected_count") or 0), examples))
    return out


def validate_table(table: pd.DataFrame, source: str = "<table>", min_len: int = 3, max_len: int = 200,
                   splits: tuple[str, ...] = ("train", "eval"), min_rows_per_split: int = 5) -> ValidationReport:
    """Validate a prompt table. Row numbers in the report are CSV line numbers (header = line 1)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    checks = [CheckResult("required columns " + ", ".join(REQUIRED_COLUMNS), not missing, len(missing),
                          [(None, f"missing column {c!r} (columns present: {', '.join(map(str, table.columns))})")
                           for c in missing])]
    if missing:
        return ValidationReport(source, len(table), checks)
    checks += _run_great_expectations(table, _expectations(min_len, max_len, list(splits)))
    counts = table["split"].value_counts()
    short = [(s, int(counts.get(s, 0))) for s in splits if counts.get(s, 0) < min_rows_per_split]
    checks.append(CheckResult(f"at least {min_rows_per_split} rows per split", not short, len(short),
                              [(None, f"split {s!r} has {n} row(s)") for s, n in short]))
    return ValidationReport(source, len(table), checks)


def validate_file(path: str | Path, **rules) -> ValidationReport:
    """Validate a prompt CSV; an unreadable file (bad encoding, broken CSV) is itself a failed check."""
    try:
        table = read_prompts(path)
    except DriftError as err:
        return ValidationReport(str(path), 0, [CheckResult("readable UTF-8 CSV", False, 1, [(None, str(err))])])
    return validate_table(table, str(path), **rules)


def rules_from_config(data_cfg) -> dict:
    return {"min_len": data_cfg.min_prompt_length, "max_len": data_cfg.max_prompt_length,
            "splits": (data_cfg.train_split, data_cfg.eval_split), "min_rows_per_split": data_cfg.min_rows_per_split}
