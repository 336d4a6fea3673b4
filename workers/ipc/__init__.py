"""The shared-memory layer: names of a run's kernel objects, segments, wires, heartbeats.

Everything a worker and the daemon share through /dev/shm lives here, and nothing here
knows about blocks, graphs or the daemon: ``segment`` makes and opens the kernel objects,
``wire`` and ``heartbeat`` lay records out in them, ``liveness`` tells whether the daemon
is still there, and ``names`` holds the rules every part of pipelined names things by.
"""
