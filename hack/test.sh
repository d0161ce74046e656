#!/usr/bin/env bash
# Install what is needed, then run every test and check (CI runs this). Debian 12, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
PATH="$PWD/.venv/bin:$PATH" exec hack/checks.sh
