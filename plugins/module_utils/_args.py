# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared option groups, the twins of doc_fragments/store.py and doc_fragments/registry.py.

Each function returns a new dict, so a module can merge it without touching anyone else's copy.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import gc
import os
import threading
import traceback
from importlib.util import find_spec
from typing import TYPE_CHECKING, Optional

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dockyard.images.plugins.module_utils._auth import (
    CredentialStore,
    known_secrets,
    redact_userinfo,
    registry_host,
    scrub,
    userinfo_password,
)
from ansible_collections.dockyard.images.plugins.module_utils._batch import resolve_workers
from ansible_collections.dockyard.images.plugins.module_utils._endpoints import RegistryOptions, parse_endpoint_address
from ansible_collections.dockyard.images.plugins.module_utils._errors import REQUESTS_NEEDED, DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform, parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import is_registry_host
from ansible_collections.dockyard.images.plugins.module_utils._stores import StoreOptions, open_store

if TYPE_CHECKING:
    from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference
    from ansible_collections.dockyard.images.plugins.module_utils._registry import Registry, RegistryClient


class DockyardModule(AnsibleModule):
    """AnsibleModule as every module of the collection runs it: what it reports (its result and message, a warning,
    or an option Ansible refuses before the module starts) carries no secret the process held, and a failure
    always has a reason (`invalid_argument` for options Ansible refuses)."""

    def fail_json(self, msg, **kwargs):
        kwargs.setdefault("reason", "invalid_argument")
        self._keep_secrets_out()
        super().fail_json(msg, **kwargs)

    def exit_json(self, **kwargs):
        self._keep_secrets_out()
        super().exit_json(**kwargs)

    def warn(self, warning, **kwargs):
        super().warn(scrub(str(warning), self.no_log_values), **kwargs)

    def _log_invocation(self):  # Ansible logs a module's options to the host's journal as it starts
        _hide_url_secrets(self)
        super()._log_invocation()

    def _keep_secrets_out(self) -> None:
        """Ansible blanks no_log values in the result it writes: those are also every secret this process held."""
        _hide_url_secrets(self)
        self.no_log_values.update(known_secrets())


MAX_TIMEOUT = 86400  # a day: beyond it, no deadline means anything (and the system's timers overflow)
MAX_RETRIES = 100
MAX_CONCURRENCY = 64


def store_argument_spec() -> dict:
    return {
        "store": {"type": "str", "default": "auto", "choices": ["auto", "oci", "docker", "podman", "containerd"]},
        "store_path": {"type": "path"},
        "docker_host": {"type": "str"},
        "containerd_address": {"type": "str", "default": "/run/containerd/containerd.sock"},
        "containerd_namespace": {"type": "str", "default": "k8s.io"},
    }


def registry_argument_spec() -> dict:
    return {
        "registry_auth": {
            "type": "list",
            "elements": "dict",
            "options": {
                "registry": {"type": "str", "required": True},
                "username": {"type": "str", "required": True},
                "password": {"type": "str", "required": True, "no_log": True},
            },
        },
        "docker_config": {"type": "path"},
        "mirrors": {"type": "dict", "default": {}},
        "insecure_registries": {"type": "list", "elements": "str", "default": []},
        "ca_path": {"type": "path"},
        "validate_certs": {"type": "bool", "default": True},
        "timeout": {"type": "int", "default": 60},
        "retries": {"type": "int", "default": 4},
    }


def merged_spec(own: dict, *groups) -> dict:
    spec = {}
    for group in groups:
        spec.update(group())
    spec.update(own)
    return spec


def registry_client(params: dict, pool_size: int = 10) -> RegistryClient:
    """A registry client configured from a module's registry options."""
    return _new_client(*registry_settings(params), pool_size)


def _new_client(credentials: CredentialStore, options: RegistryOptions, pool_size: int) -> RegistryClient:
    # loaded here, not with this file: a task that reads only its store spends no time loading requests
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient

    return RegistryClient(credentials, options, pool_size=pool_size)


def registry_settings(params: dict) -> tuple[CredentialStore, RegistryOptions]:
    """(credentials, options) from a module's registry options, every one checked: invalid_argument if one is wrong."""
    check_timeout(params)
    if not 0 <= params["retries"] <= MAX_RETRIES:
        raise DockyardError("invalid_argument", f"retries must be from 0 to {MAX_RETRIES}, not {params['retries']}")
    if params.get("ca_path") and not os.path.isfile(params["ca_path"]):
        raise DockyardError("invalid_argument", f"ca_path {params['ca_path']} is not a file; give a CA bundle in PEM form")
    mirrors = {}
    for registry, urls in (params.get("mirrors") or {}).items():
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(url, str) and url for url in urls):
            raise DockyardError("invalid_argument", f"mirrors[{registry!r}] must be a list of endpoint URLs")
        mirrors[registry_host(registry)] = tuple(parse_endpoint_address(url, f"mirrors[{registry!r}]: the mirror") for url in urls)
    insecure = tuple(str(entry).strip().lower() for entry in params.get("insecure_registries") or ())
    invalid = [entry for entry in insecure if not is_registry_host(entry)]
    if invalid:
        raise DockyardError("invalid_argument", f"insecure_registries: {', '.join(map(repr, invalid))} is not a host[:port]")
    options = RegistryOptions(
        timeout=float(params["timeout"]),
        retries=params["retries"],
        validate_certs=params["validate_certs"],
        ca_path=params.get("ca_path"),
        insecure_registries=insecure,
        mirrors=mirrors,
    )
    return CredentialStore(params.get("registry_auth"), params.get("docker_config")), options


class DeferredClient:
    """A registry client made when a task first asks a registry something, its options checked at once: a pull
    that finds every image in its store neither loads requests nor opens a connection pool."""

    def __init__(self, params: dict, pool_size: int):
        self.credentials, self._options = registry_settings(params)
        self._pool_size = pool_size
        self._client: Optional[RegistryClient] = None
        self._lock = threading.Lock()

    def _made(self) -> RegistryClient:
        with self._lock:
            if self._client is None:
                self._client = _new_client(self.credentials, self._options, self._pool_size)
            return self._client

    def for_reference(self, reference: Reference) -> Registry:
        return self._made().for_reference(reference)

    def registry(self, domain: str) -> Registry:
        return self._made().registry(domain)

    @property
    def warnings(self) -> list:
        return self._client.warnings if self._client is not None else []

    def rate_limit(self) -> Optional[dict]:
        return self._client.rate_limit() if self._client is not None else None


def check_timeout(params: dict) -> None:
    if not 0 < params["timeout"] <= MAX_TIMEOUT:
        raise DockyardError("invalid_argument", f"timeout must be from 1 to {MAX_TIMEOUT} seconds, not {params['timeout']}")


def transfer_settings(params: dict) -> tuple:
    """(concurrency, platform) of a task that moves blobs: its concurrency checked, its platform or the host's."""
    if not 1 <= params["concurrency"] <= MAX_CONCURRENCY:
        raise DockyardError("invalid_argument", f"concurrency must be from 1 to {MAX_CONCURRENCY}, not {params['concurrency']}")
    return params["concurrency"], parse_platform(params["platform"]) if params["platform"] else host_platform()


def transfer_client(params: dict, images: int) -> DeferredClient:
    """The client of a task that resolves `images` images at once and moves blobs `concurrency` at a time."""
    return DeferredClient(params, pool_size=max(params["concurrency"], resolve_workers(images)) + 2)


def store_from_params(params: dict, pool_size: int = 10):
    if "timeout" in params:  # a task that talks to registries has one; the store waits as long
        check_timeout(params)
    options = StoreOptions(
        params.get("store_path"),
        params.get("docker_host"),
        float(params.get("timeout") or 60),
        pool_size,
        containerd_address=params.get("containerd_address"),
        containerd_namespace=params.get("containerd_namespace"),
    )
    return open_store(params["store"], options)


def fail_on_errors(module, outcome: dict, errors: list) -> dict:
    """Fail `module` with `outcome` when some images failed (the first one's reason, every message); else return it."""
    if errors:
        outcome.update(errors[0].to_result())
        outcome["msg"] = "; ".join(error.message for error in errors)
        module.fail_json(**outcome)
    return outcome


def run_and_exit(module, work) -> None:
    """Exit `module` with what `work()` returns, or fail it with the error's message and reason."""
    if find_spec("requests") is None or find_spec("urllib3") is None:  # found, not loaded: see registry_client
        module.fail_json(msg=REQUESTS_NEEDED, reason="invalid_argument")
    # A module is a short-lived process: what it has loaded lives until it exits. The module turned
    # garbage collection off before loading (collecting while loading took about 10 ms to free a few
    # hundred objects); what was loaded is left out of every collection from here on, so it costs
    # nothing while the work runs, nor when the interpreter shuts down.
    gc.freeze()
    gc.enable()
    try:
        outcome = work()
    except DockyardError as exc:
        module.fail_json(**exc.to_result())
    except Exception as exc:  # anything else is a defect: a failed task that says so, never a bare traceback
        module.fail_json(
            msg=f"internal error: {type(exc).__name__}: {redact_userinfo(str(exc))[:500]}; please report it with the traceback in 'exception'",
            reason="internal_error",
            exception=traceback.format_exc(),
        )
    module.exit_json(**outcome)


def _hide_url_secrets(module) -> None:
    """Keep credentials someone wrote into an endpoint URL (a mirror, a destination, a registry) out of every
    result and log; such endpoints are refused anyway, since credentials belong in registry_auth."""
    params = module.params
    mirrors = params.get("mirrors") if isinstance(params.get("mirrors"), dict) else {}
    endpoints = [params.get(key) for key in ("destination", "registry", "docker_host")]
    endpoints += [entry.get("registry") for entry in params.get("registry_auth") or () if isinstance(entry, dict)]
    for urls in mirrors.values():
        endpoints += [urls] if isinstance(urls, str) else urls if isinstance(urls, list) else []
    for url in endpoints:
        if isinstance(url, str) and redact_userinfo(url) != url:
            module.no_log_values.update(value for value in (url, userinfo_password(url)) if value)
