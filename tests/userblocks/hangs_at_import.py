"""A user module that waits for something while it is imported (a network share, a
camera that is not there): it never finishes."""

import time

time.sleep(3600)
