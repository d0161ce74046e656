"""Test helper: the local connection with a slow file transfer, so that a test can cut a transfer halfway."""

from __future__ import annotations

DOCUMENTATION = r"""
name: throttled
short_description: Execute on the controller, with a slow file transfer (tests only)
description:
  - The local connection, except that a file sent into a delivery's staging directory goes in pieces of
    E(DOCKYARD_TEST_PIECE) bytes (default 64) with E(DOCKYARD_TEST_PAUSE) seconds (default 0.05) between them,
    written as they go, as over a slow link. Other files (Ansible's own modules) go at full speed.
author: Dockyard Images Maintainers (@dockyard)
options:
  become_success_timeout:
    type: int
    default: 10
    description: As for the local connection.
    vars:
      - name: ansible_local_become_success_timeout
  become_strip_preamble:
    type: bool
    default: true
    description: As for the local connection.
    vars:
      - name: ansible_local_become_strip_preamble
extends_documentation_fragment:
  - connection_pipelining
"""

import os
import time

from ansible.plugins.connection.local import Connection as LocalConnection


class Connection(LocalConnection):
    transport = "throttled"

    def put_file(self, in_path: str, out_path: str):
        if "/.cache/dockyard/deliver/" not in out_path:
            return super().put_file(in_path, out_path)
        piece = int(os.environ.get("DOCKYARD_TEST_PIECE", "64"))
        pause = float(os.environ.get("DOCKYARD_TEST_PAUSE", "0.05"))
        with open(in_path, "rb") as source, open(out_path, "wb") as target:
            for chunk in iter(lambda: source.read(piece), b""):
                target.write(chunk)
                target.flush()
                time.sleep(pause)
