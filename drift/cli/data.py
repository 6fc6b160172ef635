"""Data commands: validate prompt and preference files, add or import preference data. A file that
does not validate (or an import that is refused) exits 1 with a report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from drift.cli.options import Config, Override, Overrides, config_option, count, overrides_option, run_config
from drift.errors import DriftError

app = typer.Typer()
preferences = typer.Typer(short_help="preference data for retraining")
app.add_typer(preferences, name="preferences")

# Where the configuration is optional (it only supplies rules or a folder), overriding it is rare.
HiddenOverrides = Annotated[list[Override] | None, overrides_option("override a config field", hidden=True)]


@app.command("validate-prompts", short_help="check a prompt CSV (Great Expectations); exit 1 if invalid")
def validate_prompts(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="CSV with columns prompt and split", show_default=False)],
    config: Annotated[Path | None, config_option(
        "take the rules (lengths, splits, minimum rows) from this run config")] = None,
    overrides: HiddenOverrides = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON to this path")] = None,
) -> None:
    from drift.data.prompts import MAX_FILE_MB
    from drift.data.validation import rules_from_config, validate_file

    data = run_config(config, overrides).data if config else None
    rules = rules_from_config(data) if data else {}
    report = validate_file(path, data.max_file_mb if data else MAX_FILE_MB, **rules)
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    print(report.to_text(), file=sys.stdout if report.success else sys.stderr)
    if not report.success:
        raise typer.Exit(1)


@app.command("validate-preferences", short_help="check a preference pairs CSV; exit 1 if invalid")
def validate_preferences(
    path: Annotated[Path, typer.Argument(
        metavar="PATH", help="pairs.csv (image paths relative to its directory)", show_default=False)],
) -> None:
    from drift.data.preferences import read_pairs
    from drift.data.validation import validate_preferences

    if not path.is_file():
        raise DriftError(f"preference file {path} does not exist")
    report = validate_preferences(read_pairs(path), path.parent, str(path))
    print(report.to_text(), file=sys.stdout if report.success else sys.stderr)
    if not report.success:
        raise typer.Exit(1)


@preferences.command(short_help="add a batch of synthetic testbed preferences (bold strokes win)")
def add(
    config: Config,
    # numpy's generator refuses negative seeds, and the batch is named after the seed.
    seed: Annotated[int, typer.Option(min=0, help="batch seed; each batch needs its own", show_default=False)],
    overrides: Overrides = None,
    pairs: Annotated[int, typer.Option(parser=count, metavar="N")] = 200,
    out: Annotated[Path | None, typer.Option(
        help="directory of pairs.csv (default: from the config's preferences.pairs)")] = None,
) -> None:
    from drift.build import build_parts
    from drift.data.preferences import synthetic_batch

    cfg = run_config(config, overrides)
    if cfg.preferences is None:
        raise DriftError(f"{config} has no 'preferences' section (see configs/retrain_local.yaml)")
    parts = build_parts(cfg)
    out = out or cfg.preferences.pairs.parent
    try:
        table = synthetic_batch(parts.model, parts.train_prompts, pairs, out, seed, cfg.sampling.num_steps,
                                cfg.sampling.noise_level)
    except ValueError as err:
        raise DriftError(str(err)) from None
    counts = table["choice"].value_counts().to_dict()
    print(f"added {pairs} synthetic pairs (annotator: bold strokes) to {out / 'pairs.csv'}: "
          f"{len(table)} pairs in all, choices {counts}. Version it with `dvc add {out}`.")


@preferences.command("import", short_help="import a Label Studio pairwise export or a pick-one-of-N choice log")
def import_(
    path: Annotated[Path, typer.Argument(
        metavar="PATH", show_default=False,
        help="Label Studio JSON export (.json) or choice log (.csv with prompt, images separated by '|', "
             "chosen[, annotator, timestamp]; or .jsonl with the same keys)")],
    images: Annotated[Path | None, typer.Option(
        help="folder the image references are resolved against (default: the file's folder)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="preference folder holding pairs.csv (default: the config's preferences.pairs folder, "
             "else data/preferences)")] = None,
    config: Annotated[Path | None, config_option(
        "run configuration whose preferences.pairs names the folder")] = None,
    overrides: HiddenOverrides = None,
    kind: Annotated[Literal["label-studio", "choice-log"] | None, typer.Option(
        "--format", help="default: from the extension")] = None,
    keep_valid: Annotated[bool, typer.Option(
        "--keep-valid", help="import the valid rows even if others are refused")] = False,
    annotator: Annotated[str | None, typer.Option(help="choice log: annotator of rows that name none")] = None,
    prompt_key: Annotated[str, typer.Option(help="Label Studio: task data key of the prompt")] = "prompt",
    left_key: Annotated[str, typer.Option(help="Label Studio: task data key of the left (first) image")] = "image1",
    right_key: Annotated[str, typer.Option(help="Label Studio: task data key of the right (second) image")] = "image2",
) -> None:
    """Convert choices collected elsewhere into the preference data. Refused rows are reported with the
    reason; by default any refused row refuses the whole import and nothing is written. Exit 1 when refused."""
    from drift.config import PreferenceSection
    from drift.data.preference_import import import_preferences

    if out is None and config:
        cfg = run_config(config, overrides)
        if cfg.preferences is None:
            raise DriftError(f"{config} has no 'preferences' section: pass --out DIR")
        out = cfg.preferences.pairs.parent
    out = out or PreferenceSection().pairs.parent
    report = import_preferences(path, out, kind, images, keep_valid, annotator, left_key, right_key, prompt_key)
    print(report.to_text(), file=sys.stdout if report.written else sys.stderr)
    if report.written:
        print(f"Version it with `dvc add {out}`.")
    elif report.refused or report.validation:
        raise typer.Exit(1)
