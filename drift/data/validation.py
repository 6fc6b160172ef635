"""Prompt-dataset and preference-data validation with Great Expectations 1.x, and a report a person
can read.

Prompt files: required columns, no nulls or blank prompts, no duplicate prompts, length bounds,
printable text (no control characters), known split values, and a minimum number of rows per
split. Preference data: the same prompt rules, then its own (``validate_preferences``). Every
failed check is listed with a few offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from drift.config import DataSection
from drift.data.prompts import (
    MAX_FILE_MB,
    MAX_PROMPT_LENGTH,
    MIN_PROMPT_LENGTH,
    REQUIRED_COLUMNS,
    normalize_prompt,
    read_prompts,
)
from drift.errors import DriftError
from drift.logs import quiet_great_expectations

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
    kind: str = "prompt dataset"

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def to_text(self) -> str:
        head = (f"{self.kind} {self.source}: {self.rows} rows, "
                f"{len(self.checks) - len(self.failed())}/{len(self.checks)} checks passed")
        if self.success:
            return head + " - valid"
        lines = [head + " - INVALID"]
        for c in self.failed():
            lines.append(f"  FAILED {c.name}: {c.unexpected_count} offending row(s)")
            lines += [f"    line {row}: {_clip(value)!r}" if row is not None else f"    {value}"
                      for row, value in c.examples]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "success": self.success,
                "kind": self.kind, "checks": [c.__dict__ for c in self.checks]}


def _clip(value: str, width: int = 80) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def _prompt_expectations(min_len: int, max_len: int):
    """The rules every prompt follows, in prompt files and in preference data alike."""
    import great_expectations as gx

    E = gx.expectations
    return [
        ("prompt is not null", E.ExpectColumnValuesToNotBeNull(column="prompt")),
        ("prompt is not blank", E.ExpectColumnValuesToNotMatchRegex(column="prompt", regex=r"^\s*$")),
        (f"prompt length in [{min_len}, {max_len}]",
         E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=min_len, max_value=max_len)),
        ("prompt is printable text (no control characters)",
         E.ExpectColumnValuesToNotMatchRegex(column="prompt", regex=r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")),
    ]


def _expectations(min_len: int, max_len: int, splits: list[str]):
    import great_expectations as gx

    E = gx.expectations
    return [
        *_prompt_expectations(min_len, max_len),
        ("split is not null", E.ExpectColumnValuesToNotBeNull(column="split")),
        ("prompts are unique", E.ExpectColumnValuesToBeUnique(column="prompt")),
        (f"split in {splits}", E.ExpectColumnValuesToBeInSet(column="split", value_set=splits)),
    ]


def _run_great_expectations(table: pd.DataFrame, expectations) -> list[CheckResult]:
    import great_expectations as gx

    quiet_great_expectations()
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


def _validate(table: pd.DataFrame, source: str, required: tuple[str, ...], expectations,
              extra_checks=(), kind: str = "prompt dataset") -> ValidationReport:
    """Required columns first (nothing else can be checked without them), then the Great
    Expectations suite, then checks GX has no expectation for (callables table -> CheckResult)."""
    missing = [c for c in required if c not in table.columns]
    checks = [CheckResult("required columns " + ", ".join(required), not missing, len(missing),
                          [(None, f"missing column {c!r} (columns present: {', '.join(map(str, table.columns))})")
                           for c in missing])]
    if missing:
        return ValidationReport(source, len(table), checks, kind)
    checks += _run_great_expectations(table, expectations)
    checks += [check(table) for check in extra_checks]
    return ValidationReport(source, len(table), checks, kind)


def validate_table(table: pd.DataFrame, source: str = "<table>", min_len: int = MIN_PROMPT_LENGTH,
                   max_len: int = MAX_PROMPT_LENGTH,
                   splits: tuple[str, ...] = ("train", "eval"), min_rows_per_split: int = 5) -> ValidationReport:
    """Validate a prompt table. Row numbers in the report are CSV line numbers (header = line 1)."""

    def rows_per_split(t: pd.DataFrame) -> CheckResult:
        counts = t["split"].value_counts()
        short = [(s, int(counts.get(s, 0))) for s in splits if counts.get(s, 0) < min_rows_per_split]
        return CheckResult(f"at least {min_rows_per_split} rows per split", not short, len(short),
                           [(None, f"split {s!r} has {n} row(s)") for s, n in short])

    return _validate(table, source, REQUIRED_COLUMNS, _expectations(min_len, max_len, list(splits)), [rows_per_split])


def validate_preferences(table: pd.DataFrame, root: str | Path, source: str = "<pairs>",
                         min_len: int = MIN_PROMPT_LENGTH, max_len: int = MAX_PROMPT_LENGTH) -> ValidationReport:
    """Validate a preference table (drift.data.preferences documents the format); image paths are
    relative to ``root`` (or absolute). Checks prompts (the rules of prompt files, and normalised
    text as prompt files are read), choices, one row per pair and annotator, the seeds where the
    optional seed columns exist, and that every image decodes."""
    import great_expectations as gx
    from PIL import Image

    from drift.data.preferences import CHOICES, COLUMNS, pair_identity

    E = gx.expectations
    expectations = [
        *_prompt_expectations(min_len, max_len),
        (f"choice in {list(CHOICES)}", E.ExpectColumnValuesToBeInSet(column="choice", value_set=list(CHOICES))),
        ("pair ids are unique", E.ExpectColumnValuesToBeUnique(column="pair_id")),
        ("annotator is present", E.ExpectColumnValuesToNotBeNull(column="annotator")),
        ("timestamp is ISO 8601", E.ExpectColumnValuesToMatchRegex(
            column="timestamp", regex=r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?")),
    ]
    # Provenance columns are optional (older files lack them); where present, seeds are integers.
    expectations += [(f"{c} is a non-negative integer", E.ExpectColumnValuesToMatchRegex(column=c, regex=r"^\d+$"))
                     for c in ("seed_a", "seed_b") if c in table.columns]

    def prompts_normalised(t: pd.DataFrame) -> CheckResult:
        bad = [(line, p) for line, p in enumerate(t["prompt"], start=2)
               if isinstance(p, str) and normalize_prompt(p) != p]
        return CheckResult("prompt is normalised text (no zero-width or bidirectional characters, NFKC)", not bad,
                           len(bad), bad[:EXAMPLES])

    def one_row_per_pair_and_annotator(t: pd.DataFrame) -> CheckResult:
        keys = pd.DataFrame({"key": pair_identity(t, root)["key"], "annotator": t["annotator"].astype(str)})
        first = {}
        bad = []
        for line, (key, annotator) in enumerate(zip(keys["key"], keys["annotator"]), start=2):
            if (key, annotator) in first:
                bad.append((None, f"line {line}: {annotator} labelled the pair of line {first[key, annotator]} "
                                  "again (the same prompt and images)"))
            else:
                first[key, annotator] = line
        return CheckResult("one row per pair and annotator", not bad, len(bad), bad[:EXAMPLES])

    def images_decode(t: pd.DataFrame) -> CheckResult:
        bad = []
        for line, (a, b) in enumerate(zip(t["image_a"], t["image_b"]), start=2):
            for rel in (a, b):
                try:
                    with Image.open(Path(root) / str(rel)) as im:
                        im.load()
                except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a symlink loop
                    bad.append((line, f"{rel}: {type(err).__name__}"))
        return CheckResult("images exist and decode", not bad, len(bad), bad[:EXAMPLES])

    return _validate(table, source, tuple(COLUMNS), expectations,
                     [prompts_normalised, one_row_per_pair_and_annotator, images_decode], kind="preference data")


def validate_file(path: str | Path, max_file_mb: float = MAX_FILE_MB, **rules) -> ValidationReport:
    """Validate a prompt CSV; an unreadable file (missing, a directory, too large, bad encoding,
    broken CSV) is itself a failed check."""
    try:
        table = read_prompts(path, max_file_mb)
    except DriftError as err:
        return ValidationReport(str(path), 0, [CheckResult("readable UTF-8 CSV", False, 1, [(None, str(err))])])
    return validate_table(table, str(path), **rules)


def rules_from_config(data_cfg: DataSection) -> dict:
    """validate_table's rules from the run configuration's data section."""
    return {"min_len": data_cfg.min_prompt_length, "max_len": data_cfg.max_prompt_length,
            "splits": (data_cfg.train_split, data_cfg.eval_split), "min_rows_per_split": data_cfg.min_rows_per_split}
