"""A user module that is really a script: it parses its command line when imported, and
argparse ends the process (status 2) on arguments it does not know."""

import argparse

parser = argparse.ArgumentParser(prog="my-camera-script")
parser.add_argument("--threshold", type=int, required=True)
parser.parse_args()  # sys.exit(2): "the following arguments are required"
