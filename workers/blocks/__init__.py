"""The built-in blocks."""
