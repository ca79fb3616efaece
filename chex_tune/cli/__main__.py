"""``python -m chex_tune.cli``: the same as the ``chex-tune`` command."""

import sys

from chex_tune.cli import main

sys.exit(main())
