"""The ``drift`` command line: argument parsing over the library. User mistakes (a bad config,
a missing model or file) print one message and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drift.errors import DriftError


def _parse_overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DriftError(f"--set expects KEY=VALUE (e.g. train.iterations=5), got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _image_path(text: str) -> str:
    """An output image path whose extension names a format Pillow writes (.png, .jpg, ...)."""
    from PIL import Image

    if Path(text).suffix.lower() not in Image.registered_extensions():
        raise argparse.ArgumentTypeError(f"{text!r} does not end in an image extension such as .png")
    return text


def _config(args):
    from drift.config import load_config

    return load_config(args.config, _parse_overrides(args.set))


def cmd_testbed_data(args) -> int:
    from drift.config import load_testbed_params
    from drift.testbed.data import build_data

    p = load_testbed_params(args.params)
    paths = build_data(args.out, p.test_fraction, p.seed)
    print(f"wrote {paths['prompts']} and {paths['images']}")
    return 0


def cmd_testbed_classifier(args) -> int:
    from drift.config import load_testbed_params
    from drift.testbed import deterministic_build
    from drift.testbed.classifier import train_classifier
    from drift.testbed.data import load_images

    p = load_testbed_params(args.params)
    deterministic_build(p.threads)
    data = load_images(args.images)
    model, accuracy = train_classifier(data["images"], data["labels"], data["is_test"], p.classifier.epochs,
                                       p.classifier.lr, seed=p.seed, progress=True)
    model.save_pretrained(args.out)
    (Path(args.out) / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}, indent=2))
    print(f"digit classifier: held-out accuracy {accuracy:.4f}; saved to {args.out}")
    return 0


def cmd_testbed_pretrain(args) -> int:
    from drift.config import load_testbed_params
    from drift.data.prompts import read_prompts
    from drift.testbed import deterministic_build
    from drift.testbed.data import load_images
    from drift.testbed.pretrain import pretrain, save

    p = load_testbed_params(args.params)
    deterministic_build(p.threads)
    data = load_images(args.images)
    pipe, stats = pretrain(data["images"], data["labels"], ~data["is_test"], read_prompts(args.prompts),
                           **p.base_model.model_dump(), seed=p.seed, progress=True)
    save(pipe, stats, args.out)
    timings = Path(args.timings)
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(json.dumps({"pretrain_seconds": stats["seconds"], "steps": stats["steps"]}, indent=2))
    print(f"base model: {stats['steps']} steps in {stats['seconds']:.0f} s, final loss {stats['final_loss']:.4f}; "
          f"saved to {args.out} (time recorded in {timings}, outside the DVC output)")
    return 0


def cmd_train(args) -> int:
    from accelerate import PartialState

    from drift.training.run import run_training

    cfg = _config(args)
    # Under `accelerate launch` this joins the process group; each process then trains a shard of
    # every iteration's samples on its own device (or, with run.device: cpu, the CPU).
    state = PartialState(cpu=cfg.run.device == "cpu")
    if state.num_processes > 1 and cfg.run.device != "cpu":
        cfg = cfg.with_overrides({"run.device": str(state.device)})
    out = Path(args.out or cfg.run.output_dir / cfg.run.name)
    run = run_training(cfg, out, resume=args.resume, allow_config_change=args.allow_config_change)
    if not state.is_main_process:
        return 0
    for problem in run.damaged_checkpoints:
        print(f"skipped a damaged checkpoint: {problem}", file=sys.stderr)
    if run.resumed_from is not None:
        print(f"resumed from {run.resumed_from}")
    trainer = run.trainer
    (out / "trajectory.json").write_text(json.dumps(trainer.trajectory, indent=2))
    trainer.save_model(out / "model")
    print(f"trained {trainer.iteration} iterations; model in {out / 'model'}; final evaluation {trainer.trajectory[-1]}")
    return 0


def cmd_sample(args) -> int:
    from drift.build import build_parts
    from drift.evaluation.protocol import evaluate
    from drift.plots import save_grid

    cfg = _config(args)
    parts = build_parts(cfg, model_source=args.model)
    prompts = args.prompt or parts.eval_prompts[: cfg.eval.num_prompts]
    n = args.num or cfg.eval.samples_per_prompt
    ev = evaluate(parts.model, parts.reward, parts.embed, prompts, n, args.seed, cfg.sampling.num_steps,
                  args.noise_level, cfg.sampling.guidance_scale, cfg.sampling.batch_size, progress=True,
                  negative_prompt=cfg.sampling.negative_prompt)
    save_grid(ev.images, n, args.out, upscale=args.upscale)
    print(json.dumps(ev.metrics, indent=2))
    print(f"grid of {len(prompts)} prompts x {n} samples (one row per prompt) written to {args.out}")
    return 0


def cmd_validate_prompts(args) -> int:
    from drift.data.prompts import MAX_FILE_MB
    from drift.data.validation import rules_from_config, validate_file

    data = _config(args).data if args.config else None
    rules = rules_from_config(data) if data else {}
    report = validate_file(args.path, data.max_file_mb if data else MAX_FILE_MB, **rules)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    print(report.to_text(), file=sys.stdout if report.success else sys.stderr)
    return 0 if report.success else 1


def cmd_preferences_add(args) -> int:
    from drift.build import build_parts
    from drift.data.preferences import synthetic_batch

    cfg = _config(args)
    if cfg.preferences is None:
        raise DriftError(f"{args.config} has no 'preferences' section (see configs/retrain_local.yaml)")
    parts = build_parts(cfg)
    out = Path(args.out or cfg.preferences.pairs.parent)
    try:
        table = synthetic_batch(parts.model, parts.train_prompts, args.pairs, out, args.seed, cfg.sampling.num_steps,
                                cfg.sampling.noise_level)
    except ValueError as err:
        raise DriftError(str(err)) from None
    counts = table["choice"].value_counts().to_dict()
    print(f"added {args.pairs} synthetic pairs (annotator: bold strokes) to {out / 'pairs.csv'}: "
          f"{len(table)} pairs in all, choices {counts}. Version it with `dvc add {out}`.")
    return 0


def cmd_preferences_import(args) -> int:
    from drift.config import PreferenceSection
    from drift.data.preference_import import import_preferences

    if args.out:
        out = Path(args.out)
    elif args.config:
        cfg = _config(args)
        if cfg.preferences is None:
            raise DriftError(f"{args.config} has no 'preferences' section: pass --out DIR")
        out = cfg.preferences.pairs.parent
    else:
        out = PreferenceSection().pairs.parent
    report = import_preferences(args.path, out, args.format, args.images, args.keep_valid, args.annotator,
                                args.left_key, args.right_key, args.prompt_key)
    print(report.to_text(), file=sys.stdout if report.written else sys.stderr)
    if report.written:
        print(f"Version it with `dvc add {out}`.")
    return 0 if report.written or not (report.refused or report.validation) else 1


def cmd_validate_preferences(args) -> int:
    from drift.data.preferences import read_pairs
    from drift.data.validation import validate_preferences

    path = Path(args.path)
    if not path.is_file():
        raise DriftError(f"preference file {path} does not exist")
    report = validate_preferences(read_pairs(path), path.parent, str(path))
    print(report.to_text(), file=sys.stdout if report.success else sys.stderr)
    return 0 if report.success else 1


def cmd_bench_testbed(args) -> int:
    from drift.bench import testbed

    result = testbed.run(_config(args), args.out, iterations=args.iterations, every=args.every)
    print((Path(args.out) / "testbed.md").read_text())
    print(f"finished in {result['wall_seconds']:.0f} s")
    return 0


def cmd_bench_prompt_noise(args) -> int:
    from drift.bench import prompt_noise

    result = prompt_noise.run(_config(args), args.out, args.scales)
    print(prompt_noise.markdown(result))
    print(f"finished in {result['wall_seconds']:.0f} s; outputs in {args.out}")
    return 0


def cmd_bench_pareto(args, tracker=None) -> int:
    """The benchmark; ``tracker`` (mlops.tracking.MlflowTracker from the console script) records it."""
    from drift.bench.common import parse_seeds
    from drift.bench.pareto import run_benchmark
    from drift.config import load_bench_config

    seeds = parse_seeds(args.seeds)
    bench, base = load_bench_config(args.config, _parse_overrides(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(bench, base, seeds, out, tracker, resume=args.resume, workers=args.workers)
    print((out / "table.md").read_text())
    print(f"{len(bench.methods)} methods x seeds {','.join(map(str, seeds))} in {result['wall_seconds']:.0f} s "
          f"({result['run_seconds']:.0f} s of training in all, reused runs included); outputs in {out}")
    return 0


def cmd_bench_efficiency(args, tracker=None) -> int:
    """Alignment against training compute; ``tracker`` as for ``cmd_bench_pareto``."""
    from drift.bench.common import parse_seeds
    from drift.bench.efficiency import run_benchmark
    from drift.config import EfficiencyBenchConfig, load_bench_config

    seeds = parse_seeds(args.seeds)
    bench, base = load_bench_config(args.config, _parse_overrides(args.set), schema=EfficiencyBenchConfig)
    out = Path(args.out)
    result = run_benchmark(bench, base, seeds, out, tracker)
    print((out / "table.md").read_text())
    print(f"{len(bench.methods)} methods x seeds {','.join(map(str, seeds))} in {result['wall_seconds']:.0f} s; outputs in {out}")
    return 0


def build_parser(extra=()) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and its subcommand parsers by name ('train', 'bench pareto', ...), so that the
    console script (mlops.cli) can add the commands that track to MLflow. Each of ``extra`` is
    called as ``add(subparsers, with_config)`` to add commands the library does not hold."""
    commands: dict[str, argparse.ArgumentParser] = {}
    parser = argparse.ArgumentParser(prog="drift", description="DRIFT: diversity-preserving RL fine-tuning of "
                                     "text-to-image diffusion and flow models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p):
        p.add_argument("-c", "--config", required=True, help="run configuration (YAML)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.iterations=5 (repeatable)")
        return p

    p = with_config(sub.add_parser("train", help="fine-tune a model with GRPO / DRIFT"))
    p.add_argument("--out", help="run directory (default: run.output_dir/run.name)")
    p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in the run directory")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the configuration differs from the checkpoint's (beyond train.iterations)")
    p.set_defaults(handler=cmd_train)
    commands["train"] = p

    p = with_config(sub.add_parser("sample", help="sample images, score them and save a grid"))
    p.add_argument("--model", help="model directory or hub id (default: the config's model.source)")
    p.add_argument("--prompt", action="append", help="prompt (repeatable; default: the evaluation prompts)")
    p.add_argument("-n", "--num", type=_positive_int, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-level", type=float, default=0.0, help="0 = deterministic sampler")
    p.add_argument("--upscale", type=_positive_int, default=4, help="enlarge each image in the grid")
    p.add_argument("--out", type=_image_path, default="samples.png", help="the grid image")
    p.set_defaults(handler=cmd_sample)

    p = sub.add_parser("validate-prompts", help="check a prompt CSV (Great Expectations); exit 1 if invalid")
    p.add_argument("path", help="CSV with columns prompt and split")
    p.add_argument("-c", "--config", help="take the rules (lengths, splits, minimum rows) from this run config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the report as JSON to this path")
    p.set_defaults(handler=cmd_validate_prompts)

    p = sub.add_parser("validate-preferences", help="check a preference pairs CSV; exit 1 if invalid")
    p.add_argument("path", help="pairs.csv (image paths relative to its directory)")
    p.set_defaults(handler=cmd_validate_preferences)

    prefs = sub.add_parser("preferences", help="preference data for retraining")
    psub = prefs.add_subparsers(dest="preferences_command", metavar="ACTION", required=True)
    p = with_config(psub.add_parser("add", help="add a batch of synthetic testbed preferences (bold strokes win)"))
    p.add_argument("--pairs", type=_positive_int, default=200)
    p.add_argument("--seed", type=int, required=True, help="batch seed; each batch needs its own")
    p.add_argument("--out", help="directory of pairs.csv (default: from the config's preferences.pairs)")
    p.set_defaults(handler=cmd_preferences_add)
    p = psub.add_parser("import", help="import a Label Studio pairwise export or a pick-one-of-N choice log",
                        description="Convert choices collected elsewhere into the preference data. Refused rows are "
                        "reported with the reason; by default any refused row refuses the whole import and nothing is "
                        "written. Exit 1 when refused.")
    p.add_argument("path", help="Label Studio JSON export (.json) or choice log (.csv with prompt, images separated by "
                   "'|', chosen[, annotator, timestamp]; or .jsonl with the same keys)")
    p.add_argument("--images", help="folder the image references are resolved against (default: the file's folder)")
    p.add_argument("--out", help="preference folder holding pairs.csv (default: the config's preferences.pairs "
                   "folder, else data/preferences)")
    p.add_argument("-c", "--config", help="run configuration whose preferences.pairs names the folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS)
    p.add_argument("--format", choices=["label-studio", "choice-log"], help="default: from the extension")
    p.add_argument("--keep-valid", action="store_true", help="import the valid rows even if others are refused")
    p.add_argument("--annotator", help="choice log: annotator of rows that name none")
    p.add_argument("--prompt-key", default="prompt", help="Label Studio: task data key of the prompt")
    p.add_argument("--left-key", default="image1", help="Label Studio: task data key of the left (first) image")
    p.add_argument("--right-key", default="image2", help="Label Studio: task data key of the right (second) image")
    p.set_defaults(handler=cmd_preferences_import)

    bench = sub.add_parser("bench", help="benchmarks that write their results under docs/")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    p = with_config(bsub.add_parser("testbed", help="check the digits testbed against its targets"))
    p.add_argument("--out", default="docs")
    p.add_argument("--iterations", type=_positive_int, default=60, help="iterations of the GRPO and DRIFT runs")
    p.add_argument("--every", type=int, default=5, help="evaluate every N iterations")
    p.set_defaults(handler=cmd_bench_testbed)

    p = with_config(bsub.add_parser("prompt-noise", help="what each form and scale of prompt noise does to the base "
                                    "model's samples, and the prompts' distances in the conditioning space"))
    p.add_argument("--out", default="docs/prompt_noise")
    p.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="noise scales s to probe")
    p.set_defaults(handler=cmd_bench_prompt_noise)

    p = bsub.add_parser("pareto", help="DRIFT vs GRPO baselines and ablations at matched alignment/diversity")
    p.add_argument("-c", "--config", required=True, help="benchmark configuration (configs/bench/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a benchmark field, e.g. --set iterations=10")
    p.add_argument("--seeds", default="3", help="a count N (seeds 0 .. N-1) or a comma-separated list, e.g. 100,101,102")
    p.add_argument("--out", required=True, help="output directory (table, plot, trajectories)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs recorded in --out (runs.json) whose configuration is unchanged")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="runs trained at once, in processes of their own sharing torch's threads (default 1)")
    p.set_defaults(handler=cmd_bench_pareto)
    commands["bench pareto"] = p

    p = bsub.add_parser("efficiency", help="alignment against denoiser passes and wall time, with and without "
                        "the SDE window")
    p.add_argument("-c", "--config", required=True, help="benchmark configuration (configs/bench/*efficiency*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a benchmark field, e.g. --set iterations=10")
    p.add_argument("--seeds", default="100,101,102",
                   help="a count N (seeds 0 .. N-1) or a comma-separated list; default 100,101,102, the report "
                        "seeds no setting was tuned on")
    p.add_argument("--out", required=True, help="output directory (tables, plot, trajectories, summary)")
    p.set_defaults(handler=cmd_bench_efficiency)
    commands["bench efficiency"] = p

    tb = sub.add_parser("testbed", help="build the digits testbed (the DVC stages call these)")
    tsub = tb.add_subparsers(dest="testbed_command", metavar="STAGE", required=True)
    p = tsub.add_parser("data", help="prompt CSV and digit images")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default="data")
    p.set_defaults(handler=cmd_testbed_data)
    p = tsub.add_parser("classifier", help="train the digit classifier (reward and feature model)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--images", default="data/testbed/digits.npz")
    p.add_argument("--out", default="data/testbed/classifier")
    p.set_defaults(handler=cmd_testbed_classifier)
    p = tsub.add_parser("pretrain", help="pretrain the base text-to-image model with flow matching")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--images", default="data/testbed/digits.npz")
    p.add_argument("--prompts", default="data/prompts.csv")
    p.add_argument("--out", default="data/testbed/base_model")
    p.add_argument("--timings", default=".state/timings/pretrain_base_model.json",
                   help="where the wall time goes (kept out of the DVC output, which must not depend on it)")
    p.set_defaults(handler=cmd_testbed_pretrain)
    for add in extra:
        add(sub, with_config)
    return parser, commands


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and dispatch; a user mistake prints one line and exits 2."""
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except DriftError as err:
        print(f"drift: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drift: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """The library's commands only; the installed `drift` script is mlops.cli.main."""
    return run(build_parser()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
