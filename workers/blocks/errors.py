"""Errors a block raises to tell the supervisor more than "it crashed".

``ConfigurationError`` means: this configuration can never run here, do not restart
the block, mark it FAILED with the message (a screen block on a box with no display).
It is defined beside the block API, where the worker runtime catches it; this module
names it for the built-in blocks, so there is one class, whichever way it is imported.
"""

from ..block import ConfigurationError

__all__ = ["ConfigurationError"]
