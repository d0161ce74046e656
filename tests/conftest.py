"""Shared set-up: the collection on sys.path, and the support helpers importable as `support`."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from support.ansible import ensure_collection_path  # noqa: E402

sys.path.insert(0, ensure_collection_path())
