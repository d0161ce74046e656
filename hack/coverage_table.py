"""Print the per-file coverage of module_utils from the test run, and fail when a file is under 80%
without a note here saying why. No threshold beyond that: the table is for reading."""

from __future__ import annotations

import os
import sys

import coverage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, ".tmp", "collections", "ansible_collections", "dockyard", "images", "plugins", "module_utils")

FLOOR = 80.0
# A file under the floor, and why (what covers it instead, or what its uncovered lines are).
NOTES = {}


def main() -> int:
    data = coverage.Coverage()
    data.load()
    rows, unexplained = [], []
    files = [os.path.join(folder, name) for folder, _dirs, names in os.walk(PACKAGE) for name in names if name.endswith(".py")]
    for path in sorted(files):
        name = os.path.relpath(path, PACKAGE)
        if name == "__init__.py":
            continue
        _filename, statements, _excluded, missing, _text = data.analysis2(path)
        percent = 100.0 * (len(statements) - len(missing)) / len(statements) if statements else 100.0
        note = NOTES.get(name, "")
        if percent < FLOOR and not note:
            unexplained.append(name)
            note = f"under {FLOOR:.0f}% with no note in hack/coverage_table.py"
        rows.append((name, len(statements), len(missing), percent, note))
    width = max(len(row[0]) for row in rows)
    print(f"{'module_utils file'.ljust(width)}  stmts   miss   cover  note")
    for name, statements, missing, percent, note in rows:
        print(f"{name.ljust(width)}  {statements:5d}  {missing:5d}  {percent:5.1f}%  {note}".rstrip())
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
