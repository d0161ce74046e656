"""Shared set-up: the collection on sys.path, the support helpers importable as `support`, and Hypothesis's profile."""

import os
import sys

from hypothesis import settings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from support.ansible import ensure_collection_path  # noqa: E402

sys.path.insert(0, ensure_collection_path())

# The test run is a gate: it draws the same examples every time, so a failure is the change's, not
# the luck of the draw. HYPOTHESIS_PROFILE=explore draws new ones, to find what the fixed set misses;
# whatever it finds becomes an @example.
settings.register_profile("gate", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))
