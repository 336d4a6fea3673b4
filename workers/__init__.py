"""The data plane: wires, the argument codec, the worker runtime and the built-in blocks.

Nothing here knows about the daemon; the daemon builds on it.
"""
