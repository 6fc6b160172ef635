"""The command line at parsing level: the shared -c/--config and --set options, range checks, exit
codes of a usage error, a user mistake and Ctrl-C, the console script's hooks, and what `--help`
imports. Nothing here trains or samples."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import pytest
import typer

from drift import cli
from drift.cli.options import Override
from drift.errors import DriftError
from mlops import cli as console

ROOT = Path(__file__).resolve().parents[1]


def _commands(group, path=()):
    """Every command of a click group, by its words ('bench', 'pareto')."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _parse(words, argv, app=console.app):
    """The values a command line parses to, without running the command."""
    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return command.make_context(" ".join(("drift", *words)), list(argv)).params


def test_config_and_set_mean_the_same_in_every_command():
    commands = dict(_commands(typer.main.get_command(console.app)))
    with_config = {words: command for words, command in commands.items()
                   if any(p.name == "config" for p in command.params)}
    assert len(with_config) == 12  # all but validate-preferences, the testbed stages and registry NAME ones
    for words, command in with_config.items():
        options = {p.name: p.opts for p in command.params}
        assert options["config"] == ["-c", "--config"] and options["overrides"] == ["--set"], words
        config = ["-c", "run.yaml"] if words != ("validate-prompts",) else ["prompts.csv", "-c", "run.yaml"]
        required = {("preferences", "add"): ["--seed", "1"], ("bench", "pareto"): ["--out", "o"],
                    ("bench", "efficiency"): ["--out", "o"], ("preferences", "import"): ["export.json"]}
        params = _parse(words, [*config, *required.get(words, []), "--set", "train.iterations=5",
                                "--set", "drift.subset={enabled: false}", "--set", "run.name=a=b"])
        assert params["config"] == Path("run.yaml"), words
        assert params["overrides"] == [Override("train.iterations", 5), Override("drift.subset", {"enabled": False}),
                                       Override("run.name", "a=b")], words


@pytest.mark.parametrize("words, argv, message", [
    (["label"], ["--port", "65536"], "less than or equal to 65535"),
    (["label"], ["--port", "-1"], "greater than or equal to 0"),
    (["bench", "testbed"], ["--every", "-1"], "greater than or equal to 0"),
    (["sample"], ["--noise-level", "nan"], "--noise-level"),
    (["sample"], ["--noise-level", "-0.5"], "greater than or equal to 0"),
    (["preferences", "add"], ["--seed", "-2"], "greater than or equal to 0"),
    (["bench", "prompt-noise"], ["--scales", "0.5", "inf"], "at least 0, got 'inf'"),
    (["train"], ["--set", "train.iterations"], "expected KEY=VALUE"),
    (["label"], ["--version", "3", "--alias", "champion"], "'--alias': not allowed with --version"),
    (["bench", "prompt-noise"], ["0.5"], "unexpected extra arguments (0.5)"),
])
def test_bad_values_exit_2_with_the_reason_before_any_work(words, argv, message, capsys, monkeypatch):
    monkeypatch.setattr("drift.config.load_config", pytest.fail)  # nothing is loaded
    assert console.main([*words, "-c", "configs/digits.yaml", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("words, argv, name, value", [
    (["label"], ["--port", "0"], "port", 0),
    (["label"], ["--port", "65535"], "port", 65535),
    (["bench", "testbed"], ["--every", "0"], "every", 0),  # eval.every 0: the start and the end only
])
def test_values_at_the_bounds_are_accepted(words, argv, name, value):
    assert _parse(words, ["-c", "run.yaml", *argv])[name] == value


def test_scales_take_one_or_more_values_as_before(monkeypatch):
    import drift.bench

    seen = []
    benchmark = SimpleNamespace(run=lambda cfg, out, scales: seen.append(scales) or {"wall_seconds": 0},
                                markdown=lambda result: "")
    monkeypatch.setattr(drift.bench, "prompt_noise", benchmark, raising=False)
    monkeypatch.setattr("drift.cli.bench.run_config", lambda config, overrides: None)
    assert cli.main(["bench", "prompt-noise", "-c", "x.yaml", "--scales", "0.5", "1", "--out", "o"]) == 0
    assert cli.main(["bench", "prompt-noise", "-c", "x.yaml"]) == 0
    assert seen == [[0.5, 1.0], [0.25, 0.5, 1.0, 2.0]]


def test_exit_codes_of_an_invalid_file_a_usage_error_a_user_mistake_and_ctrl_c(tmp_path, capsys, monkeypatch):
    assert cli.main(["validate-prompts", str(tmp_path / "missing.csv")]) == 1
    assert "INVALID" in capsys.readouterr().err
    assert cli.main(["train", "-c", "configs/digits.yaml", "--epochs", "3"]) == 2
    assert "No such option: --epochs" in capsys.readouterr().err
    assert cli.main(["train", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err == f"drift: error: configuration file {tmp_path / 'missing.yaml'} does not exist\n"

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("drift.config.load_config", interrupted)
    assert cli.main(["train", "-c", "configs/digits.yaml"]) == 130
    assert capsys.readouterr().err == "drift: interrupted\n"


def test_help_and_no_command_exit_0(capsys):
    assert cli.main([]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("train", "sample", "validate-prompts", "bench", "testbed"))
    assert "label" not in listing  # the library's commands only; the console script adds it
    assert console.main(["-h"]) == 0 and "label" in capsys.readouterr().out


def test_the_console_script_adds_commands_and_tracked_options_through_the_hooks(tmp_path, capsys):
    def tracking(out: Path, benchmark: str, sink: Annotated[str, typer.Option(help="where runs go")] = "nowhere"):
        raise DriftError(f"would track {benchmark} into {out.name} at {sink}")

    extra = typer.Typer()

    @extra.command()
    def hello(name: str = "you"):
        print(f"hello {name}")

    app = cli.build_app(extra, tracking=tracking)
    assert cli.main(["hello", "--name", "drift"], app) == 0 and capsys.readouterr().out == "hello drift\n"
    argv = ["bench", "pareto", "-c", "configs/bench/digits_pareto.yaml", "--out", str(tmp_path / "p")]
    assert cli.main([*argv, "--sink", "db"], app) == 2
    assert capsys.readouterr().err == "drift: error: would track pareto into p at db\n"  # after the config is valid
    assert cli.main([*argv, "--sink", "db"]) == 2 and "No such option: --sink" in capsys.readouterr().err
    assert {"tracking_uri", "no_mlflow"} <= {p.name for p in dict(_commands(
        typer.main.get_command(console.app)))[("bench", "efficiency")].params}


HEAVY = ("mlflow", "zenml", "open_clip", "great_expectations")
IMPORTS = """
import json, runpy, sys
sys.argv = ["drift", *sys.argv[1:]]
try:
    runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
except SystemExit as done:
    print(json.dumps({"code": done.code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.parametrize("argv", [["drift.cli", "--help"], ["drift.cli", "bench", "--help"], ["mlops.cli", "--help"]])
def test_help_imports_no_heavy_library(argv):
    result = subprocess.run([sys.executable, "-c", IMPORTS, *argv], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["code"] == 0 and not set(HEAVY) & set(done["modules"]), done
