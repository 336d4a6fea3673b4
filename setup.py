"""Only the compiled part lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipelined.workers._atomics",
            sources=["workers/_atomics.c"],
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
