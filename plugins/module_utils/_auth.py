# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Registry credentials and authentication challenges.

Credentials come from the task first, then from a docker config.json (credHelpers, credsStore,
auths, in docker/cli's order). Which origin may receive them is decided in _transport.py alone.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
TOKEN_DEFAULT_LIFETIME = 60
TOKEN_REFRESH_MARGIN = 10


_SECRETS = set()  # every secret this process has held: none may leave it, in a result, a warning or a log
_MIN_SECRET = 4  # shorter strings are not masked: blanking every "ab" of a result would hide more than it keeps


def keep_secret(*values) -> None:
    """Remember secrets this process holds, so that `scrub` (and the module's exit) blanks them wherever they appear."""
    _SECRETS.update(value for value in values if isinstance(value, str) and len(value) >= _MIN_SECRET)


def known_secrets() -> frozenset:
    return frozenset(_SECRETS)


def scrub(text: str, also=()) -> str:
    """`text` (a registry's or an engine's, which may echo what it was sent) with every secret blanked out."""
    for secret in sorted({*_SECRETS, *(value for value in also if isinstance(value, str) and len(value) >= _MIN_SECRET)}, key=len, reverse=True):
        text = text.replace(secret, "********")
    return text


def shown(value, limit: int = 100) -> str:
    """`value` as a message quotes what a registry sent (its repr, cut to `limit` characters), with every secret
    blanked before the cut: a secret cut in two would no longer be recognised, and half of it would show."""
    return (repr(scrub(value)) if isinstance(value, str) else scrub(repr(value)))[:limit]


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


@dataclass(frozen=True)
class Credential:
    """Credentials for one registry; repr shows the username only. Every secret of it is kept (keep_secret) as
    it is made: as written, and as the Basic header and the engine's X-Registry-Auth carry it."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    def __post_init__(self):
        keep_secret(self.password, self.identity_token, self.registry_token)
        if self.basic:
            encoded = basic_header(*self.basic).split(" ", 1)[1]
            keep_secret(encoded, encoded.rstrip("="))

    @property
    def identity(self) -> str:
        """Who these credentials are for, without any secret: a token cache key part."""
        return self.username or ("<identity-token>" if self.identity_token else "")

    @property
    def basic(self) -> Optional[tuple]:
        return (self.username, self.password) if self.username and self.password else None


def registry_host(text: str) -> str:
    """`https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`."""
    host = text.strip()
    if "://" in host:
        try:
            host = urlsplit(host).netloc
        except ValueError:
            raise DockyardError(
                "invalid_argument", f"{redact_userinfo(text)!r:.200} is not a registry: give host[:port], as in registry.example.com:5000"
            ) from None
    host = host.split("/", 1)[0].lower()
    if "@" in host:
        raise DockyardError("invalid_argument", "a registry is written host[:port], without credentials in it; give them as username and password")
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _split_userinfo(text: str) -> Optional[tuple]:
    """(what precedes it, the `user:password` of a URL or `host[:port]`, what follows the last `@`), or None without `@`.

    An endpoint never has an `@` of its own, so everything before the last one is taken for credentials.
    """
    at, scheme = text.rfind("@"), _SCHEME.match(text)
    if at < 0:
        return None
    prefix = scheme.group(0) if scheme and scheme.end() <= at else ""
    return prefix, text[len(prefix) : at], text[at + 1 :]


def redact_userinfo(text: str) -> str:
    """`text` with the `user:password@` of a URL or `host[:port]` replaced, so that messages never repeat a secret."""
    found = _split_userinfo(text)
    return text if found is None else f"{found[0]}***@{found[2]}"


def userinfo_password(text: str) -> Optional[str]:
    """The password someone wrote into a URL or `host[:port]` (`user:password@`), or None."""
    found = _split_userinfo(text)
    return found[1].partition(":")[2] or None if found else None


def _config_key(domain: str) -> str:
    return DOCKER_HUB_CONFIG_KEY if registry_host(domain) == "docker.io" else domain


class CredentialStore:
    """Finds the credentials for a registry; task options win over the docker config."""

    def __init__(self, registry_auth: Optional[list] = None, docker_config: Optional[str] = None):
        self._task = {}
        for entry in registry_auth or ():
            self._task[registry_host(entry["registry"])] = Credential(username=entry.get("username") or "", password=entry.get("password") or "")
        self._config_path = docker_config or _default_config_path()
        self._config = None
        self._lock = threading.Lock()

    def lookup(self, domain: str) -> Optional[Credential]:
        host = registry_host(domain)
        if host in self._task:
            return self._task[host]
        with self._lock:
            if self._config is None:
                self._config = _read_config(self._config_path)
        return _from_config(self._config, host)


def _default_config_path() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _read_config(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise DockyardError("invalid_argument", f"docker config {path} is not a regular file; set docker_config to a config.json")
            body = handle.read(MAX_CONFIG_BYTES + 1)
        if len(body) > MAX_CONFIG_BYTES:
            raise DockyardError("invalid_argument", f"docker config {path} is larger than {MAX_CONFIG_BYTES} bytes; set docker_config to a config.json")
        data = json.loads(body)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise DockyardError("invalid_argument", f"cannot read docker config {path}: {exc}; fix the file or set docker_config") from None
    if not isinstance(data, dict):
        return {}
    for key in ("auths", "credHelpers"):
        if not isinstance(data.get(key) or {}, dict):
            raise DockyardError("invalid_argument", f"docker config {path}: {key} is not a JSON object; fix the file or set docker_config")
    return data


def _from_config(config: dict, host: str) -> Optional[Credential]:
    key = _config_key(host)
    helper = (config.get("credHelpers") or {}).get(host) or (config.get("credHelpers") or {}).get(key)
    if helper:
        return _run_helper(helper, key)
    if config.get("credsStore"):
        found = _run_helper(config["credsStore"], key)
        if found:
            return found
    for entry_key, entry in (config.get("auths") or {}).items():
        try:
            named = registry_host(entry_key)
        except DockyardError:
            continue  # an entry for no registry cannot be this one's
        if named == host and isinstance(entry, dict):
            return _decode_auth_entry(entry, host)
    return None


def _decode_auth_entry(entry: dict, host: str) -> Optional[Credential]:
    if not all(isinstance(entry.get(key) or "", str) for key in ("username", "password", "auth", "identitytoken", "registrytoken")):
        raise DockyardError("invalid_argument", f"the docker config entry for {host} has fields that are not strings")
    username, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise DockyardError("invalid_argument", f"the docker config entry for {host} has an invalid auth field") from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise DockyardError("invalid_argument", f"the docker config entry for {host} has an auth field without a user name")
        password = password.rstrip("\x00")
    credential = Credential(
        username=username,
        password=password,
        identity_token=entry.get("identitytoken") or "",
        registry_token=entry.get("registrytoken") or "",
    )
    return credential if (credential.basic or credential.identity_token or credential.registry_token) else None


def _run_helper(suffix: str, server: str) -> Optional[Credential]:
    program = f"docker-credential-{suffix}"
    try:
        done = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise DockyardError("unauthorized", f"credential helper {program} is configured but not installed") from None
    except (OSError, ValueError) as exc:
        raise DockyardError("unauthorized", f"credential helper {program!r} cannot be run: {exc}") from None
    except subprocess.TimeoutExpired:
        raise DockyardError("unauthorized", f"credential helper {program} did not answer within 30 s") from None
    if done.returncode != 0:
        if b"credentials not found" in done.stdout + done.stderr:
            return None
        raise DockyardError("unauthorized", f"credential helper {program} failed for {server}")
    try:
        data = json.loads(done.stdout)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(key) or "", str) for key in ("Username", "Secret")):
        raise DockyardError("unauthorized", f"credential helper {program} returned something that is not a JSON object of strings")
    if data.get("Username") == "<token>":
        return Credential(identity_token=data.get("Secret") or "")
    return Credential(username=data.get("Username") or "", password=data.get("Secret") or "")


def engine_auth_header(credential: Optional[Credential], domain: str) -> Optional[str]:
    """The X-Registry-Auth value for an engine pull (base64url JSON); None for anonymous pulls."""
    if credential is None:
        return None
    if credential.identity_token:
        data = {"identitytoken": credential.identity_token, "serveraddress": domain}
    elif credential.registry_token:
        data = {"registrytoken": credential.registry_token, "serveraddress": domain}
    elif credential.basic:
        data = {"username": credential.username, "password": credential.password, "serveraddress": _config_key(domain)}
    else:
        return None
    header = base64.urlsafe_b64encode(json.dumps(data).encode()).decode("ascii")
    keep_secret(header, header.rstrip("="))
    return header
