"""setuptools hook for the cffi-built codec; all other metadata is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["build_codec.py:ffibuilder"])
