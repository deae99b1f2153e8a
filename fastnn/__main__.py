"""``python -m fastnn``: the command line (``fastnn/cli``)."""

import sys

from .cli import main

sys.exit(main())
