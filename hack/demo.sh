#!/usr/bin/env bash
# The main job: install what is needed, start a throwaway local registry seeded with sample images
# that share base layers, pre-warm localhost from it into the embedded OCI store with
# playbooks/prewarm.yml, and show the layer report. Debian 12, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh demo
exec .venv/bin/python hack/demo.py
