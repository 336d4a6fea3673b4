"""One way to start a real ``pipelined`` for the tests and the benchmarks.

- ``harness.daemon``: ``RunningDaemon``, the daemon as a child process with an instance,
  a socket and a folder of its own, and ``wait_for``.
- ``harness.graphs``: graph files to give it: the test blocks of ``userblocks`` and the
  built-in demo as a headless box runs it.

Tests import it as ``harness`` (tests/ is on their sys.path); bench/*.py put tests/ on
sys.path first.
"""
