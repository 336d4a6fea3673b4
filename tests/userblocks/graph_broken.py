"""A user block module that fails while importing, for tests/test_graph.py."""

raise RuntimeError("boom while importing")
