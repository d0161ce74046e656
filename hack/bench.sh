#!/usr/bin/env bash
# Side-by-side timings against skopeo, community.docker and curl; not part of the test run.
# Arguments go to benchmarks/run.py (--runs N, --only NAME ...).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
exec .venv/bin/python benchmarks/run.py "$@"
