# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""requests and urllib3, where the managed host has them: the one place the collection imports them.

Without them the names below stand in (classes as `object`, modules as None) so that every module
still loads: `run_and_exit` fails a task with what to install where they are not found at all, and
`require_requests` where they are found but do not load (a dependency of their own missing).
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import traceback

from ansible_collections.dockyard.images.plugins.module_utils._errors import REQUESTS_NEEDED, DockyardError

__all__ = [
    "HAS_REQUESTS",
    "REQUESTS_IMPORT_ERROR",
    "HTTPAdapter",
    "HTTPConnection",
    "HTTPConnectionPool",
    "HTTPSConnection",
    "HTTPSConnectionPool",
    "requests",
    "require_requests",
    "urllib3",
]

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by require_requests
    requests = urllib3 = None
    HTTPAdapter = HTTPConnection = HTTPSConnection = HTTPConnectionPool = HTTPSConnectionPool = object
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()


def require_requests() -> None:
    """invalid_argument, with what to install, where requests is found but cannot be loaded (run_and_exit only
    finds it: a library missing one of its own dependencies is found yet fails to load)."""
    if not HAS_REQUESTS:
        raise DockyardError("invalid_argument", REQUESTS_NEEDED, exception=REQUESTS_IMPORT_ERROR)
