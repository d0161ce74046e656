# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image references, parsed and normalised as distribution/reference does.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_RE = re.compile(r"(?:" + _DOMAIN_NAME + "|" + _IPV6 + r")(?::[0-9]+)?\Z")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST_RE = re.compile(r"(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}\Z")
_HEX_RE = re.compile(r"[a-f0-9]+\Z")


@dataclass(frozen=True)
class Reference:
    """A fully normalised image reference."""

    domain: str
    path: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def canonical(self) -> str:
        return self.name + self._suffix()

    @property
    def familiar_name(self) -> str:
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX) :]:
            path = path[len(OFFICIAL_REPO_PREFIX) :]
        return path

    @property
    def familiar(self) -> str:
        return self.familiar_name + self._suffix()

    @property
    def pinned(self) -> bool:
        """True when the reference names content by digest and must never be re-resolved."""
        return self.digest is not None

    @property
    def stored_name(self) -> str:
        """The name a store keeps the image under: a tag pinned by digest is kept as the tag."""
        return f"{self.name}:{self.tag}" if self.tag else self.canonical

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        if self.digest:
            suffix += f"@{self.digest}"
        return suffix

    def to_dict(self) -> dict:
        return {
            "domain": self.domain,
            "path": self.path,
            "tag": self.tag,
            "digest": self.digest,
            "name": self.name,
            "canonical": self.canonical,
            "familiar": self.familiar,
        }


def is_digest(text) -> bool:
    """Whether `text` is a digest this collection accepts: sha256 or sha512, lowercase hex of the right length."""
    return isinstance(text, str) and _DIGEST_RE.match(text) is not None


def image_id_prefix(text) -> Optional[str]:
    """The hex digits of an image id (`sha256:` and 64 hex digits, or the digits alone) or of a prefix of
    at least 12 of them, as `docker images` shows; None for anything else."""
    if not isinstance(text, str):
        return None
    bare = text[len("sha256:") :] if text.startswith("sha256:") else text
    return bare if 12 <= len(bare) <= 64 and _HEX_RE.match(bare) else None


def is_registry_host(text) -> bool:
    """Whether `text` is a registry host[:port] as references spell it, with a port from 1 to 65535."""
    if not isinstance(text, str) or not _DOMAIN_RE.match(text):
        return False
    port = text.rpartition(":")[2] if not text.endswith("]") and ":" in text else ""
    digits = port.lstrip("0") or "0"  # int() refuses more than 4300 digits: a longer port is out of range without it
    return not port or (len(digits) <= 5 and 1 <= int(digits) <= 65535)


def _invalid(text: str, why: str) -> DockyardError:
    return DockyardError("invalid_reference", f"invalid image reference {text!r}: {why}", reference=text)


def parse_reference(text: str) -> Reference:
    """Parse a reference such as `redis`, `redis:7`, `ghcr.io/o/app@sha256:…` into its normal form.

    Follows distribution/reference ParseNormalizedNamed plus TagNameOnly: `docker.io` is the
    default domain, single-component Hub names get `library/`, and `latest` is the tag when
    neither tag nor digest is given.
    """
    if not isinstance(text, str) or not text:
        raise _invalid(str(text), "it is empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise _invalid(text, "it contains white space")
    if _IDENTIFIER_RE.match(text):
        raise _invalid(text, "a 64-character hexadecimal string is an image id, not a repository name")
    if "://" in text:
        raise _invalid(text, "a reference has no URL scheme; write host[:port]/path[:tag]")

    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.rsplit("@", 1)
        if not _DIGEST_RE.match(digest):
            raise _invalid(text, f"{digest!r} is not a digest (sha256: and 64 lowercase hex characters)")

    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _invalid(
                text,
                f"tag {tag!r} must be 1 to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            )

    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.match(domain):
        raise _invalid(text, f"{domain!r} is not a valid registry host[:port]")
    if not path:
        raise _invalid(text, "the repository path is empty")
    for component in path.split("/"):
        if component.lower() != component and _PATH_COMPONENT_RE.match(component.lower()):
            raise _invalid(text, "repository name must be lowercase")
        if not _PATH_COMPONENT_RE.match(component):
            raise _invalid(
                text,
                f"path component {component!r} must be lowercase letters and digits, separated by '.', '_', '__' or '-'",
            )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"repository name must not be longer than {NAME_TOTAL_LENGTH_MAX} characters")

    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_reference_or_none(text) -> Optional[Reference]:
    """The reference `text` spells, or None where it is none (what stores hold is not always one)."""
    try:
        return parse_reference(text)
    except DockyardError:
        return None


def _split_domain(name: str) -> tuple[str, str]:
    """Split `name` into registry domain and repository path, as splitDockerDomain does."""
    first, sep, rest = name.partition("/")
    looks_like_host = "." in first or ":" in first or first == "localhost" or first.lower() != first
    if not sep or not looks_like_host:
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path
