"""``python -m hetsiren``: the command line, as torchrun starts it (``torchrun -m hetsiren``)."""

import sys

from hetsiren.cli import main

sys.exit(main())
