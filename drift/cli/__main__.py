"""``python -m drift.cli``: the library's commands; ``accelerate launch -m drift.cli train ...`` starts each
process here."""

import sys

from drift.cli import main

sys.exit(main())
