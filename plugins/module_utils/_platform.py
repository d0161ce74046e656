# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Platforms: parse, normalise, detect the host's, and choose from an image index.

Normalisation and fallbacks follow containerd/platforms, which dockerd uses.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import platform as _stdlib_platform
import re
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._auth import shown
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "i386": "386",
    "i686": "386",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
}
_IMPLIED_VARIANT = {"armhf": "v7", "armel": "v6"}
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_LEVEL_RE = re.compile(r"v([0-9]+)\Z")
_MAX_LEVEL = 16  # above any real variant; a typo such as v99999999 must not list a hundred million platforms


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os, architecture and variant (and os version and features)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple = field(default_factory=tuple)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def matches(self, other: Platform) -> bool:
        """The same os, architecture and variant; the os version and features aside."""
        return (self.os, self.architecture, self.variant) == (other.os, other.architecture, other.variant)

    @classmethod
    def from_descriptor(cls, data: Optional[dict]) -> Optional[Platform]:
        """The platform of an index entry or image config, normalised; None if it has none.

        A platform whose fields are not strings is refused with unsupported_media_type.
        """
        if data is None:
            return None
        if not isinstance(data, dict):
            raise DockyardError("unsupported_media_type", f"the platform {shown(data)} is not a JSON object")
        fields = [data.get(key) or "" for key in ("os", "architecture", "variant", "os.version")]
        features = data.get("os.features") or ()
        if not all(isinstance(value, str) for value in fields) or not isinstance(features, (list, tuple)) or not all(isinstance(f, str) for f in features):
            raise DockyardError("unsupported_media_type", f"the platform {_shown(data)} has fields that are not strings")
        os_name, architecture, variant, os_version = fields
        if not architecture:
            return None
        return normalize(cls(os=os_name, architecture=architecture, variant=variant, os_version=os_version, os_features=tuple(features)))

    def to_oci(self) -> dict:
        data = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        if self.os_version:
            data["os.version"] = self.os_version
        if self.os_features:
            data["os.features"] = list(self.os_features)
        return data


def _shown(data: dict) -> str:
    return repr({key: data.get(key) for key in ("os", "architecture", "variant") if key in data})[:200]


def normalize(p: Platform) -> Platform:
    os_name = p.os.lower()
    arch = p.architecture.lower()
    variant = p.variant.lower()
    if arch in _IMPLIED_VARIANT and not variant:
        variant = _IMPLIED_VARIANT[arch]
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "amd64" and variant == "v1":
        variant = ""
    elif arch == "arm64":
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return Platform(os_name, arch, variant, p.os_version, p.os_features)


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]` (or just `arch`, meaning linux) into a normalised Platform."""
    parts = text.split("/") if isinstance(text, str) else []
    if not 1 <= len(parts) <= 3 or not all(_COMPONENT_RE.match(part) for part in parts):
        raise DockyardError(
            "invalid_argument",
            f"invalid platform {text!r}: write os/architecture[/variant], such as linux/arm64 or linux/arm/v7",
        )
    if len(parts) == 1:
        parts = ["linux", *parts]
    return normalize(Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else ""))


def host_platform() -> Platform:
    """The platform of the machine this runs on; the arm variant comes from /proc/cpuinfo."""
    os_name = _stdlib_platform.system().lower() or "linux"
    machine = _stdlib_platform.machine()
    variant = ""
    if machine.startswith("arm") and machine != "arm64":
        variant = _cpuinfo_arm_variant()
        machine = "arm"
    return normalize(Platform(os_name, machine, variant))


def _cpuinfo_arm_variant() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _sep, value = line.partition(":")
                if key.strip().lower() == "cpu architecture":
                    return value.strip()
    except OSError:
        pass
    return ""


def compatible_platforms(wanted: Platform) -> list[Platform]:
    """Platforms that can run on `wanted`, best first (containerd's `Only` matcher)."""
    p = normalize(wanted)
    ordered = [p]
    level = _LEVEL_RE.match(p.variant)
    if p.architecture == "arm" and level:
        ordered += [_arm(p.os, f"v{n}") for n in range(_capped(level.group(1)) - 1, 4, -1)]
    elif p.architecture == "arm64":
        major, minor = _arm64_version(p.variant)
        if major == 9:
            ordered += [Platform(p.os, "arm64", _arm64_variant(9, m)) for m in range(minor - 1, -1, -1)]
            major, minor = 8, minor + 5  # v9.0 carries the features of v8.5
        ordered += [Platform(p.os, "arm64", _arm64_variant(major, m)) for m in range(minor, -1, -1)]
        ordered += [_arm(p.os, f"v{n}") for n in range(8, 4, -1)]
    elif p.architecture == "amd64":
        top = _capped(level.group(1)) if level else 1
        ordered += [Platform(p.os, "amd64", f"v{n}" if n > 1 else "") for n in range(top - 1, 0, -1)]
        ordered.append(Platform(p.os, "386"))
    seen, unique = set(), []
    for candidate in ordered:
        key = (candidate.os, candidate.architecture, candidate.variant)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


def runs_on(found: Platform, wanted: Platform) -> bool:
    """Whether an image for `found` runs where `wanted` is asked for: the same platform or one compatible with it."""
    return any(found.matches(candidate) for candidate in compatible_platforms(wanted))


def _arm(os_name: str, variant: str) -> Platform:
    return Platform(os_name, "arm", variant)


def _arm64_variant(major: int, minor: int) -> str:
    if minor == 0:
        return "" if major == 8 else f"v{major}"
    return f"v{major}.{minor}"


def _arm64_version(variant: str) -> tuple[int, int]:
    match = re.match(r"v([0-9]+)(?:\.([0-9]+))?\Z", variant or "v8")
    if not match:
        return 8, 0
    return _capped(match.group(1)), _capped(match.group(2) or "0")


def _capped(digits: str) -> int:
    """A variant's version number from its digits, at most _MAX_LEVEL (int() refuses more than 4300 digits)."""
    digits = digits.lstrip("0") or "0"
    return min(int(digits), _MAX_LEVEL) if len(digits) <= 3 else _MAX_LEVEL


def is_attestation(descriptor: dict) -> bool:
    annotations = descriptor.get("annotations") or {}
    if annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest":
        return True
    platform = descriptor.get("platform") or {}
    return platform.get("os") == "unknown" and platform.get("architecture") == "unknown"


@dataclass(frozen=True)
class PlatformChoice:
    """The index entry chosen for a platform, and whether it is a fallback."""

    descriptor: dict
    platform: Optional[Platform]
    fallback: bool


def choose_manifest(manifests: list, wanted: Platform, supported_media_types) -> PlatformChoice:
    """Pick the index entry that best runs on `wanted`; among equals the first entry wins."""
    candidates = [
        (descriptor, Platform.from_descriptor(descriptor.get("platform")))
        for descriptor in manifests
        if descriptor.get("mediaType") in supported_media_types and not is_attestation(descriptor)
    ]
    best = best_running_on(candidates, wanted)
    if best is None:
        available = available_platforms(manifests)
        raise DockyardError(
            "platform_not_found",
            f"no manifest for platform {wanted} (available: {', '.join(available) or 'none'}); set platform to one of those",
            platforms_available=available,
        )
    rank, descriptor, entry_platform = best
    return PlatformChoice(descriptor, entry_platform, fallback=rank > 0)


def best_running_on(candidates: list, wanted: Platform) -> Optional[tuple]:
    """Of (item, its platform or None) pairs, (rank, item, platform) of the one that runs best on `wanted`
    (rank 0 is an exact match; the first of equals wins), or None when none runs there."""
    ranking = compatible_platforms(wanted)
    best = None
    for item, platform in candidates:
        rank = _rank(platform, ranking, wanted)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, item, platform)
    return best


def _rank(entry: Optional[Platform], ranking: list, wanted: Platform) -> Optional[int]:
    if entry is None:
        return len(ranking)  # an entry without platform matches anything, after every real match
    for position, candidate in enumerate(ranking):
        if entry.matches(candidate) and set(entry.os_features) <= set(wanted.os_features):
            return position
    return None


def available_platforms(manifests: list) -> list:
    names = []
    for descriptor in manifests:
        if is_attestation(descriptor):
            continue
        entry_platform = Platform.from_descriptor(descriptor.get("platform"))
        if entry_platform is not None:
            names.append(str(entry_platform))
    return names
