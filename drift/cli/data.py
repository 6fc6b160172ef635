"""Data commands: validate prompt and preference files, add or import preference data. A file that
does not validate (or an import that is refused) exits 1 with a report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from drift.cli.options import (
    Config,
    Override,
    Overrides,
    config_option,
    count,
    overrides_option,
    run_config,
    with_hook,
)
from drift.errors import DriftError

if TYPE_CHECKING:
    from drift.config import DriftConfig, PreferenceSection

ChampionHead = Callable[..., tuple[Path | None, str]]
"""How `drift preferences report` finds the current reward head when --head is not given: a function
of the run configuration returning the head's directory (or None) and what it is (or why there is
none); its further keyword parameters become options of the command (drift.cli.options.with_hook).
The library has none; the console script (mlops.cli) looks in the registry."""

# Where the configuration is optional (it only supplies rules or a folder), overriding it is rare.
HiddenOverrides = Annotated[list[Override] | None, overrides_option("override a config field", hidden=True)]


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
    timestamp: Annotated[str | None, typer.Option(
        help="choice log: ISO 8601 time of rows that give none (default: the time of the import)")] = None,
) -> None:
    """Convert choices collected elsewhere into the preference data. Refused rows are reported with the
    reason; by default any refused row refuses the whole import and nothing is written. Rows already
    imported (same pair, annotator and choice) are skipped; an export with nothing new exits 0. Exit 1
    when refused."""
    from drift.data.preference_import import import_preferences
    from drift.data.prompts import MAX_PROMPT_LENGTH

    cfg = run_config(config, overrides) if config else None
    out = out or _preferences(config, cfg).pairs.parent
    max_length = cfg.data.max_prompt_length if cfg else MAX_PROMPT_LENGTH
    report = import_preferences(path, out, kind, images, keep_valid, annotator, left_key, right_key, prompt_key,
                                timestamp, max_length)
    print(report.to_text(), file=sys.stdout if report.written or not report.refused else sys.stderr)
    if report.written:
        print(f"Version it with `dvc add {out}`.")
    elif report.refused or report.validation:
        raise typer.Exit(1)


def _preferences(config: Path | None, cfg: DriftConfig | None) -> PreferenceSection:
    """The configuration's preferences section (the defaults without a configuration)."""
    from drift.config import PreferenceSection

    if cfg is not None and cfg.preferences is None:
        raise DriftError(f"{config} has no 'preferences' section: name the preference data yourself")
    return cfg.preferences if cfg is not None else PreferenceSection()


def _no_champion(cfg: DriftConfig) -> tuple[None, str]:
    return None, "not measured (pass -c CONFIG and --head DIR, or use the installed drift with a registry)"


def report(
    path: Annotated[Path | None, typer.Argument(
        metavar="[PATH]", show_default=False,
        help="pairs.csv (default: the config's preferences.pairs, else data/preferences/pairs.csv)")] = None,
    config: Annotated[Path | None, config_option(
        "run configuration: its preference embedding and held-out share measure the head")] = None,
    overrides: HiddenOverrides = None,
    head: Annotated[Path | None, typer.Option(
        help="a reward head directory (save_pretrained; default: the registry's champion of "
             "preferences.reward_model_name)")] = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="also write the figures as JSON to this path")] = None,
    *,
    champion_head: ChampionHead,
) -> None:
    """Per rater: pairs labelled, agreement with the other raters on shared pairs (percent and Cohen's
    kappa over first/second/tie, per pair of raters; a rater's figure is the mean over partners
    weighted by shared pairs), tie rate, median seconds per answer, and the reward head's agreement
    with the rater on held-out pairs."""
    from drift.data.preferences import read_pairs
    from drift.scoring.preference_head import load_head, rater_agreement

    cfg = run_config(config, overrides) if config else None
    path = path or _preferences(config, cfg).pairs
    if not path.is_file():
        raise DriftError(f"preference file {path} does not exist")
    if head and cfg is None:
        raise DriftError("--head needs -c CONFIG: the head is compared on the config's embedding and held-out pairs")
    if head:
        head_dir, which = head, f"the reward head in {head}"
    elif cfg is None:
        head_dir, which = _no_champion(cfg)
    else:
        head_dir, which = champion_head(cfg)
    head_model = embed = None
    if head_dir is not None:
        from drift.registry import EMBEDDINGS

        head_model = load_head(head_dir)
        features = cfg.preference_embedding
        embed = EMBEDDINGS.build(features.name, device=cfg.run.device, **features.args)
        which += ", on the held-out pairs (ties excluded; decided rows compared in brackets)"
    figures = rater_agreement(read_pairs(path), path.parent, head_model, embed,
                              _preferences(config, cfg).holdout_fraction, which, str(path))
    print(figures.to_text())
    if json_path:
        json_path.write_text(json.dumps(figures.to_dict(), indent=2))


def build_app(champion_head: ChampionHead | None = None) -> typer.Typer:
    """The data commands; `preferences report` finds the current reward head with ``champion_head``."""
    app = typer.Typer()
    app.command("validate-prompts", short_help="check a prompt CSV (Great Expectations); exit 1 if invalid")(
        validate_prompts)
    app.command("validate-preferences", short_help="check a preference pairs CSV; exit 1 if invalid")(
        validate_preferences)
    preferences = typer.Typer(short_help="preference data for retraining")
    preferences.command(short_help="add a batch of synthetic testbed preferences (bold strokes win)")(add)
    preferences.command("import", short_help="import a Label Studio pairwise export or a pick-one-of-N choice log")(
        import_)
    preferences.command(short_help="agreement between raters, and the reward head's agreement with each")(
        with_hook(report, "champion_head", champion_head, 1, _no_champion))
    app.add_typer(preferences, name="preferences")
    return app
