"""Shared fixtures: golden vectors and end-to-end process helpers live in tests/support.py."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
