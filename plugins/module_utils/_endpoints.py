# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How a task says to reach registries: its options, and the endpoints it names (mirrors, destinations).

Checked as a task starts, before anything talks to a registry, and without loading requests: a task that
finds everything in its store never loads the transport at all.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from ansible_collections.dockyard.images.plugins.module_utils._auth import redact_userinfo
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._reference import is_registry_host


@dataclass
class RegistryOptions:
    """How to talk to registries: timeouts, retries, TLS and mirrors, from the task's options."""

    timeout: float = 60.0
    retries: int = 4
    validate_certs: bool = True
    ca_path: Optional[str] = None
    insecure_registries: tuple = ()
    mirrors: dict = field(default_factory=dict)
    max_retry_after: float = 60.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


@dataclass(frozen=True)
class EndpointAddress:
    """A registry endpoint as a user wrote it: `host[:port]`, or `http(s)://host[:port]`."""

    netloc: str
    scheme: Optional[str]  # None: found as a registry's is (https, or plain HTTP where allowed)


def parse_endpoint_address(text, what: str) -> EndpointAddress:
    """Parse an endpoint a user gave (a mirror, a copy destination, a registry to search); invalid_argument if it is not one.

    Credentials in the URL are refused (they belong in registry_auth), and the message does not repeat them.
    """
    shown = redact_userinfo(text) if isinstance(text, str) else repr(text)
    if not isinstance(text, str) or not text.strip():
        raise DockyardError("invalid_argument", f"{what} {shown!r} is not a registry endpoint; give http(s)://host[:port] or host[:port]")
    explicit = "://" in text
    try:
        parts = urlsplit(text if explicit else "https://" + text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        parts = None
    usage = "give http(s)://host[:port] or host[:port]"
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query or parts.fragment:
        raise DockyardError("invalid_argument", f"{what} {shown!r} is not a registry endpoint; {usage}")
    if parts.username is not None or parts.password is not None:
        raise DockyardError("invalid_argument", f"{what} {shown!r} has credentials in it; give them in registry_auth for its host, and the URL without them")
    if not is_registry_host(parts.netloc):
        raise DockyardError("invalid_argument", f"{what} {shown!r}: {parts.netloc!r} is not a valid host[:port] (ports run from 1 to 65535); {usage}")
    return EndpointAddress(parts.netloc.lower(), parts.scheme if explicit else None)
