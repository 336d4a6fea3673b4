"""``python -m pipelined.workers <encoded-args>``: how the daemon starts every block."""

import sys

from .runtime.worker import main

sys.exit(main())
