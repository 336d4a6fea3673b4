"""The control protocol, shared with the daemon, and the pipectl command."""
