# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Errors with a machine-readable reason.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

REASONS = frozenset(
    (
        "invalid_reference",
        "invalid_argument",
        "not_found",
        "unauthorized",
        "denied",
        "rate_limited",
        "unreachable",
        "tls",
        "digest_mismatch",
        "platform_not_found",
        "in_use",
        "store_locked",
        "store_corrupt",
        "invalid_archive",
        "unsupported_media_type",
        "disk_full",
        "engine_error",
        "internal_error",
    )
)


REQUESTS_NEEDED = "the Python library requests is needed on the managed host: install python3-requests or pip install requests"


class DockyardError(Exception):
    """A failure a user can act on: `reason` is one of REASONS, `message` says what to do."""

    def __init__(self, reason: str, message: str, **details):
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details

    def with_context(self, prefix: str) -> DockyardError:
        """The same error, its message prefixed with what was being done (an image, a host)."""
        return DockyardError(self.reason, f"{prefix}: {self.message}", **self.details)

    def to_result(self) -> dict:
        result = {"msg": self.message, "reason": self.reason}
        result.update(self.details)
        return result
