"""``python -m pipelined.workers <encoded-args>``: how the daemon starts every block."""

import sys

from .runtime import main

sys.exit(main())
