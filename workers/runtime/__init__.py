"""The worker runtime: one block in its own process (``python -m pipelined.workers``)."""
