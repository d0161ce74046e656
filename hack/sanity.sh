#!/usr/bin/env bash
# ansible-test sanity needs the collection at .../ansible_collections/dockyard/images: run it on a copy.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target="$work/ansible_collections/dockyard/images"
mkdir -p "$target"
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$target"
cd "$target"
git init -q && git add -A
ansible-test sanity --python 3.11 --color no "$@"
