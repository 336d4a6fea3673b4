"""A user module with side effects at import: a thread that never ends, a signal handler,
a path entry, an open device, a lot of output; and then a perfectly good block."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from pipelined.workers.block import Block, Param

threading.Thread(target=lambda: time.sleep(3600), name="meddler", daemon=False).start()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.path.insert(0, "/meddled")
os.environ["MEDDLED"] = "1"
DEVICE = open("/dev/null", "rb")  # noqa: SIM115 (the camera it opens, and keeps)
print("hello from the import " * 20000)  # 440 KB on stdout
mark = os.environ.get("USERBLOCK_MARK")
if mark:
    Path(mark).write_text(str(os.getpid()))


class Fine(Block):
    """A source that says its size: after all that, a good block."""

    params = {"side": Param(int, default=8)}
    min_inputs = max_inputs = 0

    @classmethod
    def max_output_bytes(cls, params, input_bytes):
        return params["side"] ** 2 * 3
