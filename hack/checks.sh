#!/usr/bin/env bash
# Every test and check: ruff, unit and integration tests against real services, Molecule, ansible-lint
# (production profile), the collection docs lint, ansible-test sanity and the changelog lint, with the
# tools of .venv/ first on PATH. hack/test.sh sets up, then runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Python as a clean machine runs it: output buffered when it goes to a pipe.
unset PYTHONUNBUFFERED

echo "== ruff"
ruff check .
ruff format --check .

echo "== pytest (unit and integration), with the coverage of module_utils"
python3 -m pytest -q -n 2 --cov --cov-report=
python3 hack/coverage_table.py

echo "== module_utils with Debian's own python3-requests, as managed hosts have it"
.venv-hosts/bin/python -m pytest -q -p no:cacheprovider tests/unit/plugins/module_utils

echo "== molecule (a fleet of containers, the Docker Engine, a registry mirror under systemd, a Kubernetes node's containerd, air-gapped hosts)"
python3 hack/molecule.py default engine mirror containerd airgap

echo "== ansible-lint"
ansible-lint

echo "== collection docs"
antsibull-docs lint-collection-docs --plugin-docs .

echo "== ansible-test sanity"
hack/sanity.sh

echo "== changelog"
antsibull-changelog lint
