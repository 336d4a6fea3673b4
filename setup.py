"""Only the compiled part lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipelined.workers.ipc._atomics",
            sources=["workers/ipc/_atomics.c"],
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
