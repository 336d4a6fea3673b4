"""The transports that bench/wire.py compares, and how each writes and reads.

Each transport module offers three things, all keyed on a ``Ctx``:

- ``setup(ctx) -> Owner | None``: in the parent, create what the owner creates (the wire,
  the seed's segment and lock, the queues). ``Owner.attached()`` runs once every process
  has opened it (the names can go: a kill -9 from then on leaves nothing in /dev/shm);
  ``Owner.close()`` removes the rest.
- ``writer(ctx, handles)``: a context manager yielding ``send(count)``.
- ``reader(ctx, index, handles)``: a context manager yielding ``recv(timeout)``.

Modules are imported lazily, so a writer of one transport never imports another's library.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Info:
    module: str
    write: str  # "copy": the writer copies a finished frame in; "loan": it fills the slot
    read: str  # "view": zero-copy, in place; "copy": the reader copies the frame out
    launcher: str = "subprocess"  # or "spawn": multiprocessing, for mp.Queue only


TRANSPORTS: dict[str, Info] = {
    "wire-view": Info("plwire", "copy", "view"),
    "wire-copy": Info("plwire", "copy", "copy"),
    "wire-loan-view": Info("plwire", "loan", "view"),
    "iceoryx2-view": Info("iox", "loan", "view"),
    "iceoryx2-copy": Info("iox", "copy", "copy"),
    "zmq": Info("zmqps", "copy", "copy"),
    "mp-queue": Info("mpqueue", "copy", "copy", launcher="spawn"),
    "seed-lock": Info("seedlock", "copy", "copy"),
}
MEMCPY = "memcpy"  # measured in the parent: np.copyto between two arrays
ALL = [*TRANSPORTS, MEMCPY]


def load(transport: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{TRANSPORTS[transport].module}")
