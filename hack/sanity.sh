#!/usr/bin/env bash
# ansible-test sanity needs the collection at .../ansible_collections/dockyard/images: run it on a copy.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target="$work/ansible_collections/dockyard/images"
mkdir -p "$target"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -co --exclude-standard
else # a checkout without git's metadata: everything but what the tools make
  find . \( -name .git -o -name .venv -o -name .venv-hosts -o -name .tmp -o -name .hypothesis -o -name __pycache__ -o -name '.*_cache' \) -prune -o -type f -print
fi | tar -cf - -T - | tar -xf - -C "$target"
cd "$target"
git init -q && git add -A
ansible-test sanity --python 3.11 --color no "$@"
