"""setuptools hook for the cffi-built codec; all other metadata is in pyproject.toml.

The codec is compiled against CPython's limited API (``py_limited_api`` in
build_codec.py), so a wheel is tagged ``cp310-abi3``: one wheel per platform
serves every CPython from 3.10 on.
"""

from setuptools import setup

setup(
    cffi_modules=["build_codec.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
