"""The README's main job: bring the data up to date, then run the default pipeline."""

from __future__ import annotations

import sys

from drift.cli import main as cli_main


def main() -> int:
    print("drift demo: the pipeline arrives with later issues; checking the CLI.")
    return cli_main(["--help"])


if __name__ == "__main__":
    sys.exit(main())
