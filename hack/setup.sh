#!/usr/bin/env bash
# Install what the demo and the tests need on a clean Debian 12 machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo shellcheck docker.io podman chromium debootstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt

# ansible-test bootstraps pip from this file instead of downloading it.
mkdir -p ~/.ansible/test/cache
echo 'import ensurepip; ensurepip.bootstrap(upgrade=True)' > ~/.ansible/test/cache/get_pip_24_2.py

# Make the working tree importable as the collection dockyard.images.
mkdir -p .tmp/collections/ansible_collections/dockyard
ln -sfn "$PWD" .tmp/collections/ansible_collections/dockyard/images
