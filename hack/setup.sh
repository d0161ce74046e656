#!/usr/bin/env bash
# Install what the tests need (or, with the argument `demo`, only what the demo needs) on a clean
# Debian 12 machine, as root: Debian's packages with apt-get, and the Python packages into .venv/ in
# this checkout with Debian's own python3, never into Debian's Python. The demo and test scripts
# call this first; it is quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-test}"
if [[ "$profile" != test && "$profile" != demo ]]; then
  echo "usage: hack/setup.sh [test|demo]: install what the tests (the default) or the demo need" >&2
  exit 2
fi

# The demo: a local registry, and ansible-core with what the collection needs on the controller.
packages=(python3 python3-venv docker-registry)
if [[ "$profile" == test ]]; then
  packages+=(python3-requests git skopeo shellcheck docker.io podman chromium debootstrap)
fi
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "Installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's python3, by its path: another python3 earlier on PATH is not what users have.
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv .venv
fi

# Make the working tree importable as the collection dockyard.images.
mkdir -p .tmp/collections/ansible_collections/dockyard
ln -sfn "$PWD" .tmp/collections/ansible_collections/dockyard/images

if [[ "$profile" == demo ]]; then
  grep -E '^(ansible-core|requests|PyYAML|charset-normalizer)==' requirements-dev.txt | xargs .venv/bin/python -m pip install --quiet --disable-pip-version-check
  exit 0
fi

.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# What managed hosts run the modules with: Debian's python3 and python3-requests (urllib3 1.26),
# plus the test runner, for the module_utils tests, and ansible-core, whose module_utils every
# module run brings to the host (it installs no requests or urllib3 of its own).
if ! .venv-hosts/bin/python -c 'import requests' 2>/dev/null; then
  rm -rf .venv-hosts
  /usr/bin/python3 -m venv --system-site-packages .venv-hosts
fi
grep -E '^(pytest|hypothesis|hpack|trustme|ansible-core)==' requirements-dev.txt | xargs .venv-hosts/bin/python -m pip install --quiet --disable-pip-version-check

# ansible-test bootstraps pip from this file instead of downloading it.
mkdir -p ~/.ansible/test/cache
echo 'import ensurepip; ensurepip.bootstrap(upgrade=True)' > ~/.ansible/test/cache/get_pip_24_2.py
