"""``python -m pipelines.cli``: the ``recsys`` command."""
import sys

from pipelines.cli import main

sys.exit(main())
