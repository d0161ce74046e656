# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A registry client for the OCI Distribution / Docker Registry HTTP API v2, over requests.

It knows no store: callers hand it a way to read manifests they already hold and a sink to
stream blobs into. Every failure is a DockyardError whose reason comes from `_reason_for`.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import json
import random
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlencode, urljoin, urlsplit

from ansible_collections.dockyard.images.plugins.module_utils._auth import (
    Credential,
    CredentialStore,
    TokenCache,
    check_realm,
    parse_challenges,
    registry_host,
)
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, choose_manifest
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
CHUNK = 1024 * 1024
DIGEST_ALGORITHMS = ("sha256", "sha512")
DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
DOCKER_HUB_INDEX = "https://index.docker.io"
RETRYABLE_STATUS = frozenset((408, 499, 500, 502, 503, 504, 522))
USER_AGENT = "dockyard.images"

_CODE_REASONS = {
    "UNAUTHORIZED": "unauthorized",
    "DENIED": "denied",
    "MANIFEST_UNKNOWN": "not_found",
    "NAME_UNKNOWN": "not_found",
    "BLOB_UNKNOWN": "not_found",
    "TOOMANYREQUESTS": "rate_limited",
    "UNSUPPORTED": "unsupported_media_type",
}
_STATUS_REASONS = {401: "unauthorized", 403: "denied", 404: "not_found", 429: "rate_limited"}


def _reason_for(status: int, codes: list) -> str:
    """The one place that maps an HTTP status and registry error codes to a reason."""
    for code in codes:
        if code in _CODE_REASONS:
            return _CODE_REASONS[code]
    if status in _STATUS_REASONS:
        return _STATUS_REASONS[status]
    return "unreachable" if status >= 500 else "not_found" if status == 410 else "unreachable"


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor from a manifest: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    urls: tuple = ()
    annotations: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> Descriptor:
        try:
            return cls(data["mediaType"], data["digest"], int(data["size"]), tuple(data.get("urls") or ()), data.get("annotations") or {})
        except (KeyError, TypeError, ValueError):
            raise DockyardError("unsupported_media_type", f"malformed descriptor in manifest: {data!r:.200}") from None


@dataclass
class RateLimit:
    """The rate-limit headers a registry sent last (Docker Hub sends them)."""

    limit: Optional[str] = None
    remaining: Optional[str] = None
    source: Optional[str] = None

    def to_dict(self) -> dict:
        return {"limit": self.limit, "remaining": self.remaining, "source": self.source}


@dataclass(frozen=True)
class ResolvedImage:
    """What the registry says a reference is, for one platform."""

    reference: Reference
    digest: str
    media_type: str
    top_bytes: bytes
    manifest_digest: str
    manifest_media_type: str
    manifest_bytes: bytes
    config: Descriptor
    layers: tuple
    platform: Optional[Platform]
    platform_fallback: bool

    @property
    def index_bytes(self) -> Optional[bytes]:
        return self.top_bytes if self.media_type in INDEX_TYPES else None


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


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _is_loopback(netloc: str) -> bool:
    host = urlsplit("//" + netloc).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BlobSink:
    """Where a blob streams to. The store implements it; the registry only writes and asks."""

    offset: int

    def write(self, chunk: bytes) -> None: ...

    def restart(self) -> None: ...

    def digest(self) -> str: ...


class HashingSink(BlobSink):
    """A sink that hashes what it is given with the algorithm of the digest it expects; subclasses keep the bytes."""

    def __init__(self, digest: str):
        algorithm = digest.split(":", 1)[0]
        self._algorithm = algorithm if algorithm in DIGEST_ALGORITHMS else "sha256"
        self._hash = hashlib.new(self._algorithm)
        self.offset = 0

    def write(self, chunk: bytes) -> None:
        self._keep(chunk)
        self._count(chunk)

    def _count(self, chunk: bytes) -> None:
        """Hash bytes the sink holds."""
        self._hash.update(chunk)
        self.offset += len(chunk)

    def restart(self) -> None:
        self._discard()
        self._hash = hashlib.new(self._algorithm)
        self.offset = 0

    def digest(self) -> str:
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def _keep(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


class MemorySink(HashingSink):
    """A blob kept in memory (a config)."""

    def __init__(self, digest: str):
        super().__init__(digest)
        self.data = bytearray()

    def _keep(self, chunk: bytes) -> None:
        self.data += chunk

    def _discard(self) -> None:
        self.data = bytearray()


class FileSink(HashingSink):
    """A blob kept in an open binary file, from the file's start."""

    def __init__(self, digest: str, file):
        super().__init__(digest)
        self.file = file

    def _keep(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def _discard(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def close(self) -> None:
        self.file.close()


class Endpoint:
    """One base URL (the registry or a mirror) with its own auth state and retries."""

    def __init__(
        self, session, base_url: Optional[str], netloc: str, credential: Optional[Credential], options: RegistryOptions, insecure: bool, plain_http: bool
    ):
        self.session = session
        self.netloc = netloc
        self.credential = credential
        self.options = options
        self.insecure = insecure  # listed in insecure_registries: TLS is not verified
        self.plain_http = plain_http or insecure  # may fall back to http when TLS is not spoken
        self._http_first = plain_http  # loopback: asking over http first costs no TLS setup
        self._base_url = base_url
        self._base_lock = threading.Lock()
        self._tokens = TokenCache()
        self._auth_lock = threading.Lock()  # one token request per scope, however many workers wait
        self._challenge = None
        self._basic = False
        self.rate_limit = RateLimit()

    def base_url(self) -> str:
        """The scheme is https unless the registry is insecure and does not speak TLS."""
        with self._base_lock:
            if self._base_url is None:
                self._base_url = self._probe_scheme()
            return self._base_url

    def _probe_scheme(self) -> str:
        https = f"https://{self.netloc}"
        if not self.plain_http:
            return https
        if self._http_first and self._speaks_http():
            return f"http://{self.netloc}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                self.session.get(https + "/v2/", timeout=min(self.options.timeout, 10), verify=False).close()
            return https  # it speaks TLS: requests go over https, verified as configured
        except requests.exceptions.RequestException:
            return f"http://{self.netloc}"

    def _speaks_http(self) -> bool:
        """Whether plain HTTP gets an answer (HEAD: no GET is spent); a TLS port answers 400 (or nothing)."""
        try:
            response = self.session.head(f"http://{self.netloc}/v2/", timeout=min(self.options.timeout, 10))
            response.close()
            return response.status_code != 400
        except requests.exceptions.RequestException:
            return False

    def request(self, method: str, path: str, *, scope: str, what: str, headers=None, stream=False, params=None, ok=(200,), data=None):
        """Send a request with auth and retries; return the response whose status is in `ok`.

        `data` is a body: bytes, or a seekable file that is rewound before every attempt.
        """
        url = path if "://" in path else self.base_url() + path
        headers = dict(headers or {})
        attempt = 0
        authorized_retry = False
        while True:
            auth_header = self._authorization(scope, what)
            if auth_header:
                headers["Authorization"] = auth_header
            if hasattr(data, "seek"):
                data.seek(0)
            try:
                response = self.session.request(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    data=data,
                    stream=stream,
                    timeout=(min(self.options.timeout, 10), self.options.timeout),
                    allow_redirects=True,
                    verify=self._verify(),
                )
            except requests.exceptions.SSLError as exc:
                raise DockyardError("tls", f"{what}: TLS failed talking to {self.netloc}: {_short(exc)}; set ca_path, or validate_certs: false") from None
            except requests.exceptions.RequestException as exc:
                attempt += 1
                if attempt > self.options.retries:
                    raise DockyardError("unreachable", f"{what}: cannot reach {self.netloc} after {attempt} attempts: {_short(exc)}") from None
                self._sleep_backoff(attempt)
                continue
            self._record_rate_limit(response)
            if response.status_code in ok:
                return response
            if response.status_code == 401 and not authorized_retry:
                authorized_retry = True
                if self._authenticate(response, scope, what):
                    response.close()
                    continue
            if response.status_code == 429 or response.status_code in RETRYABLE_STATUS:
                attempt += 1
                delay = self._retry_delay(response, attempt)
                if attempt <= self.options.retries and delay is not None:
                    response.close()
                    time.sleep(delay)
                    continue
            raise self._error(response, what)

    def _verify(self):
        if self.insecure or not self.options.validate_certs:
            return False
        return self.options.ca_path or True

    def _retry_delay(self, response, attempt: int) -> Optional[float]:
        if response.status_code == 429:
            wait = _retry_after(response.headers.get("Retry-After"))
            if wait is not None:
                return wait if wait <= self.options.max_retry_after else None
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _sleep_backoff(self, attempt: int) -> None:
        time.sleep(self._backoff(attempt))

    def _record_rate_limit(self, response) -> None:
        if "ratelimit-remaining" in response.headers or "ratelimit-limit" in response.headers:
            self.rate_limit = RateLimit(
                response.headers.get("ratelimit-limit"), response.headers.get("ratelimit-remaining"), response.headers.get("docker-ratelimit-source")
            )

    def _authorization(self, scope: str, what: str) -> Optional[str]:
        """The Authorization header for `scope`, fetching a token once the registry asked for one."""
        if self._basic:
            user, password = self.credential.basic
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        if self._challenge is None:
            return None
        key = self._token_key(scope)
        with self._auth_lock:
            token = self._tokens.get(key)
            if token is None:
                self._fetch_token([scope] if scope else [], scope, what)
                token = self._tokens.get(key)
        return f"Bearer {token}" if token else None

    def _token_key(self, scope: str):
        identity = self.credential.identity if self.credential else ""
        return (self._challenge.realm, self._challenge.params.get("service", ""), scope, identity)

    def _authenticate(self, response, scope: str, what: str) -> bool:
        """Answer a 401 challenge; True when a retry with new credentials makes sense."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            check_realm(bearer.realm, self.netloc, self.plain_http)
            wanted = [s for s in (bearer.params.get("scope", ""), scope) if s]
            with self._auth_lock:
                self._challenge = bearer
                self._fetch_token(wanted, scope, what)
            return True
        if any(c.scheme == "basic" for c in challenges) and self.credential and self.credential.basic and not self._basic:
            self._basic = True
            return True
        return False

    def _fetch_token(self, scopes: list, cache_scope: str, what: str) -> None:
        challenge = self._challenge
        params = [("service", challenge.params["service"])] if challenge.params.get("service") else []
        params += [("scope", s) for s in dict.fromkeys(scopes)]
        credential = self.credential
        try:
            if credential and credential.registry_token:
                self._tokens.put(self._token_key(cache_scope), credential.registry_token, None)
                return
            if credential and credential.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": credential.identity_token, "client_id": USER_AGENT}
                form.update({"service": challenge.params.get("service", ""), "scope": " ".join(dict.fromkeys(scopes))})
                reply = self.session.post(challenge.realm, data=form, timeout=self.options.timeout, verify=self._verify())
            else:
                if credential and credential.basic:
                    params.append(("account", credential.username))
                reply = self.session.get(
                    challenge.realm + ("&" if "?" in challenge.realm else "?") + urlencode(params),
                    auth=credential.basic if credential else None,
                    timeout=self.options.timeout,
                    verify=self._verify(),
                )
        except requests.exceptions.SSLError as exc:
            raise DockyardError("tls", f"{what}: TLS failed talking to token service {challenge.realm}: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise DockyardError("unreachable", f"{what}: cannot reach token service {challenge.realm}: {_short(exc)}") from None
        if reply.status_code in (401, 403):
            who = f"user {credential.username!r}" if credential and credential.username else "anonymous access"
            raise DockyardError("unauthorized", f"{what}: the token service of {self.netloc} refused {who}; check registry_auth or the docker config")
        if reply.status_code != 200:
            raise DockyardError(_reason_for(reply.status_code, []), f"{what}: token service {challenge.realm} answered HTTP {reply.status_code}")
        try:
            body = reply.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise DockyardError("unauthorized", f"{what}: token service {challenge.realm} returned no token")
        self._tokens.put(self._token_key(cache_scope), token, body.get("expires_in"))

    def _error(self, response, what: str) -> DockyardError:
        codes, messages = [], []
        try:
            for item in (response.json() or {}).get("errors") or []:
                codes.append(str(item.get("code", "UNKNOWN")).upper())
                if item.get("message"):
                    messages.append(str(item["message"]))
                # a pull-through cache wraps what its upstream said in an UNKNOWN error's detail
                detail = item.get("detail")
                inner = (detail.get("errors") or []) if isinstance(detail, dict) else []
                codes.extend(str(error.get("code", "")).upper() for error in inner if isinstance(error, dict))
        except (ValueError, AttributeError):
            pass
        reason = _reason_for(response.status_code, codes)
        detail = "; ".join(messages) or response.reason or ""
        hint = {
            "unauthorized": "check registry_auth or the docker config",
            "denied": "the credentials lack access to this repository",
            "not_found": "check the repository name and tag",
            "rate_limited": "wait, authenticate, or use a mirror",
        }.get(reason, "")
        message = f"{what}: {self.netloc} answered HTTP {response.status_code}" + (f" ({detail})" if detail else "") + (f"; {hint}" if hint else "")
        error = DockyardError(reason, message, http_status=response.status_code)
        if reason == "rate_limited":
            error.details["retry_after"] = response.headers.get("Retry-After")
        response.close()
        return error


def endpoint_for_url(session, url: str, credentials: Optional[CredentialStore], options: RegistryOptions) -> Endpoint:
    """An endpoint named by URL (`http://mirror:5000`) or bare `host:port`, whose scheme is found
    as a registry's is (https, or plain HTTP on loopback and for insecure registries).

    It authenticates with what `credentials` hold for its own host; a mirror gets none.
    """
    explicit = "://" in url
    parts = urlsplit(url if explicit else "https://" + url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise DockyardError("invalid_argument", f"{url!r} is not a registry endpoint; give http(s)://host[:port] or host[:port]")
    insecure = parts.netloc in options.insecure_registries
    credential = (credentials.lookup(parts.netloc) if credentials else None) or Credential()
    if not explicit:
        return Endpoint(session, None, parts.netloc, credential, options, insecure, _is_loopback(parts.netloc))
    return Endpoint(session, f"{parts.scheme}://{parts.netloc}", parts.netloc, credential, options, insecure, parts.scheme == "http")


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "…"


class Registry:
    """One registry: its mirrors in order, then the registry itself."""

    def __init__(self, domain: str, session, credentials: CredentialStore, options: RegistryOptions):
        self.domain = domain
        self.options = options
        base = DOCKER_HUB_ENDPOINT if domain == "docker.io" else None
        netloc = "registry-1.docker.io" if domain == "docker.io" else domain
        credential = credentials.lookup(domain) or Credential()
        upstream = Endpoint(session, base, netloc, credential, options, domain in options.insecure_registries, _is_loopback(domain))
        self.endpoints = [endpoint_for_url(session, url, None, options) for url in options.mirrors.get(domain, ())] + [upstream]
        self.upstream = upstream
        # Docker Hub searches on its index host; any other registry may answer /v1/search itself.
        self.index = Endpoint(session, DOCKER_HUB_INDEX, "index.docker.io", credential, options, False, False) if domain == "docker.io" else upstream
        self.warnings = []

    @property
    def rate_limit(self) -> RateLimit:
        return self.upstream.rate_limit

    def _each_endpoint(self, operation: Callable):
        """Run `operation(endpoint)` on mirrors then upstream; a mirror's failure falls through."""
        last_error = None
        for endpoint in self.endpoints:
            try:
                return operation(endpoint)
            except DockyardError as exc:
                if endpoint is self.upstream or exc.reason in ("digest_mismatch", "invalid_argument"):
                    raise
                last_error = exc
        raise last_error  # pragma: no cover - upstream is always last

    # -- manifests -----------------------------------------------------------------------------

    @staticmethod
    def _manifest_request(endpoint: Endpoint, method: str, reference: Reference, ref: str, what: str):
        return endpoint.request(
            method, f"/v2/{reference.path}/manifests/{ref}", scope=_pull_scope(reference), what=what, headers={"Accept": ACCEPT}, stream=method == "GET"
        )

    def head_manifest(self, reference: Reference) -> Optional[str]:
        """The digest a tag points at now, from a HEAD (free on Docker Hub); None if not sent."""

        def head(endpoint: Endpoint):
            response = self._manifest_request(endpoint, "HEAD", reference, reference.manifest_reference, f"resolving {reference.familiar}")
            response.close()
            return response.headers.get("Docker-Content-Digest")

        return self._each_endpoint(head)

    def get_manifest(self, reference: Reference, ref: str) -> tuple:
        """GET a manifest by tag or digest: (bytes, media type, digest), verified."""

        def get(endpoint: Endpoint):
            response = self._manifest_request(endpoint, "GET", reference, ref, f"fetching manifest {ref} of {reference.familiar}")
            return (*_manifest_body(response, reference), response.headers.get("Docker-Content-Digest"))

        body, header_type, header_digest = self._each_endpoint(get)
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and digest != ref:
            raise DockyardError("digest_mismatch", f"manifest {ref} of {reference.familiar} hashes to {digest}; the registry served other bytes")
        if header_digest and header_digest != digest:
            self.warnings.append(f"{self.domain} labelled manifest {ref} of {reference.familiar} {header_digest}, but its bytes hash to {digest}")
        return body, _manifest_media_type(body, header_type, reference), digest

    def find_manifest(self, reference: Reference, digest: Optional[str], local_manifest: Callable) -> tuple:
        """(bytes, media type, digest) of the manifest `digest` names, or the reference's own when
        None: what `local_manifest(digest)` returns, else fetched from the registry."""
        local = local_manifest(digest) if digest else None
        if local is not None:
            return (*local, digest)
        return self.get_manifest(reference, digest or reference.manifest_reference)

    def resolve(self, reference: Reference, platform: Platform, known_digest: Optional[str], local_manifest: Callable) -> ResolvedImage:
        """Resolve a reference to the manifest for `platform`.

        `known_digest` is the top-level digest already found by a HEAD (or the pin); manifests
        that `local_manifest(digest)` returns are not fetched again.
        """
        body, media_type, digest = self.find_manifest(reference, reference.digest or known_digest, local_manifest)
        manifest_bytes, manifest_type, manifest_digest = body, media_type, digest
        choice_platform, fallback = None, False
        if media_type in INDEX_TYPES:
            choice = choose_manifest(index_entries(reference, body), platform, MANIFEST_TYPES)
            choice_platform, fallback = choice.platform, choice.fallback
            manifest_bytes, manifest_type, manifest_digest = self.find_manifest(reference, choice.descriptor["digest"], local_manifest)
        config, layers = image_blobs(reference, manifest_digest, manifest_bytes, manifest_type)
        return ResolvedImage(reference, digest, media_type, body, manifest_digest, manifest_type, manifest_bytes, config, layers, choice_platform, fallback)

    # -- blobs -----------------------------------------------------------------------------------

    def fetch_blob(self, reference: Reference, descriptor: Descriptor, sink: BlobSink) -> None:
        """Stream a blob into `sink`, resuming with Range after an interruption, then verify it."""
        self._each_endpoint(lambda endpoint: self._fetch_blob_from(endpoint, reference, descriptor, sink))

    def _fetch_blob_from(self, endpoint: Endpoint, reference: Reference, descriptor: Descriptor, sink: BlobSink) -> None:
        what = f"fetching blob {descriptor.digest} of {reference.familiar}"
        interruptions = 0
        while sink.offset < descriptor.size:
            offset = sink.offset
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            response = endpoint.request(
                "GET",
                f"/v2/{reference.path}/blobs/{descriptor.digest}",
                scope=_pull_scope(reference),
                what=what,
                headers=headers,
                stream=True,
                ok=(200, 206, 416),
            )
            with response:
                if response.status_code == 206 and not _range_matches(response.headers.get("Content-Range"), offset, descriptor.size):
                    sink.restart()
                    continue
                if response.status_code == 416 or (offset and response.status_code == 200):
                    sink.restart()
                    if response.status_code == 416:
                        continue
                try:
                    for chunk in response.raw.stream(CHUNK, decode_content=False):
                        sink.write(chunk)
                        if sink.offset > descriptor.size:
                            break
                except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    interruptions += 1
                    if interruptions > endpoint.options.retries:
                        raise DockyardError("unreachable", f"{what}: the download broke off {interruptions} times: {_short(exc)}") from None
                    endpoint._sleep_backoff(interruptions)
                    continue
            if sink.offset < descriptor.size:
                interruptions += 1
                if interruptions > endpoint.options.retries:
                    raise DockyardError("unreachable", f"{what}: the registry sent {sink.offset} of {descriptor.size} bytes")
        actual = sink.digest() if sink.offset == descriptor.size else None
        if actual != descriptor.digest:
            sink.restart()
            got = f"{actual}" if actual else f"{sink.offset} bytes instead of {descriptor.size}"
            raise DockyardError("digest_mismatch", f"{what}: the bytes received hash to {got}, not {descriptor.digest}; nothing was stored")

    def fetch_blob_bytes(self, reference: Reference, descriptor: Descriptor, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (a config) into memory, verified like any other."""
        if descriptor.size > limit:
            raise DockyardError("unsupported_media_type", f"{reference.familiar}: blob {descriptor.digest} is too large to read into memory")
        sink = MemorySink(descriptor.digest)
        self.fetch_blob(reference, descriptor, sink)
        return bytes(sink.data)

    # -- tags and catalog -------------------------------------------------------------------------

    def list_tags(self, reference: Reference, page_size: int = 1000) -> list:
        return self._paginate(f"/v2/{reference.path}/tags/list", "tags", _pull_scope(reference), f"listing tags of {reference.familiar}", page_size)

    def search(self, term: str, limit: int) -> Optional[list]:
        """Results of the v1 search endpoint (as docker search uses it), or None when there is none."""
        response = self.index.request(
            "GET", "/v1/search", scope="", what=f"searching {self.domain} for {term!r}", params={"q": term, "n": limit}, ok=(200, 404, 405)
        )
        with response:
            if response.status_code != 200:
                return None
            try:
                results = (response.json() or {}).get("results")
            except ValueError:
                return None
        return [item for item in results if isinstance(item, dict)] if isinstance(results, list) else None

    def catalog(self, page_size: int = 1000) -> list:
        return self._paginate("/v2/_catalog", "repositories", "registry:catalog:*", f"listing repositories of {self.domain}", page_size)

    def _paginate(self, path: str, key: str, scope: str, what: str, page_size: int) -> list:
        items, url, params = [], path, {"n": min(page_size, 1000)}
        endpoint = self.upstream
        while url:
            response = endpoint.request("GET", url, scope=scope, what=what, params=params)
            try:
                items.extend((response.json() or {}).get(key) or [])
            except ValueError:
                raise DockyardError("unsupported_media_type", f"{what}: the registry returned something that is not JSON") from None
            following = response.links.get("next", {}).get("url")
            url = urljoin(response.url, following) if following else None
            params = None
        return items


class Destination:
    """A registry to push into, addressed by one endpoint; repositories keep their source paths."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.name = endpoint.netloc

    @staticmethod
    def _scope(path: str) -> str:
        return f"repository:{path}:pull,push"

    def _manifest(self, method: str, path: str, ref: str, what: str):
        """The response for a manifest, or None where the destination has none."""
        try:
            response = self.endpoint.request(
                method, f"/v2/{path}/manifests/{ref}", scope=self._scope(path), what=what, headers={"Accept": ACCEPT}, stream=method == "GET", ok=(200, 404)
            )
        except DockyardError as exc:
            if exc.reason == "not_found":  # said in a 5xx, as a pull-through cache does
                return None
            raise
        if response.status_code == 404:
            response.close()
            return None
        return response

    def manifest_digest(self, path: str, ref: str) -> Optional[str]:
        """What `ref` (a tag or digest) names at the destination, or None when it names nothing."""
        response = self._manifest("HEAD", path, ref, f"looking up {path}:{ref} on {self.name}")
        if response is None:
            return None
        response.close()
        return response.headers.get("Docker-Content-Digest") or (ref if ref.startswith("sha256:") else None)

    def read_manifest(self, path: str, digest: str) -> Optional[tuple]:
        """(bytes, media type) of a manifest the destination holds, verified, or None."""
        what = f"reading manifest {digest} of {path} on {self.name}"
        response = self._manifest("GET", path, digest, what)
        if response is None:
            return None
        reference = Reference(domain=self.name, path=path, digest=digest)
        body, header_type = _manifest_body(response, reference)
        if sha256_digest(body) != digest:
            raise DockyardError("digest_mismatch", f"{what}: its bytes hash to {sha256_digest(body)}")
        return body, _manifest_media_type(body, header_type, reference)

    def has_blob(self, path: str, digest: str) -> bool:
        what = f"looking up blob {digest} in {path} on {self.name}"
        response = self.endpoint.request("HEAD", f"/v2/{path}/blobs/{digest}", scope=self._scope(path), what=what, ok=(200, 404))
        response.close()
        return response.status_code == 200

    def mount_blob(self, path: str, digest: str, source_path: str) -> Optional[str]:
        """Link a blob another repository of the destination holds; None when mounted, else an upload URL."""
        return self._start_upload(path, {"mount": digest, "from": source_path}, f"mounting blob {digest} from {source_path} into {path} on {self.name}")

    def upload_blob(self, path: str, digest: str, size: int, stream, location: Optional[str] = None) -> None:
        """Upload a blob monolithically from the seekable file `stream`; the registry checks the digest."""
        what = f"pushing blob {digest} to {path} on {self.name}"
        location = location or self._start_upload(path, None, what)
        response = self.endpoint.request(
            "PUT",
            urljoin(self.endpoint.base_url() + "/", location),
            scope=self._scope(path),
            what=what,
            params={"digest": digest},
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=stream,
            ok=(201, 204),
        )
        response.close()

    def _start_upload(self, path: str, params: Optional[dict], what: str) -> Optional[str]:
        response = self.endpoint.request(
            "POST", f"/v2/{path}/blobs/uploads/", scope=self._scope(path), what=what, params=params, ok=(201, 202, 405), headers={"Content-Length": "0"}
        )
        response.close()
        if response.status_code == 405:
            raise DockyardError(
                "denied",
                f"{what}: {self.name} does not accept pushes (a pull-through cache never does); "
                "copy into a registry that does, such as the mirror's seed endpoint",
            )
        if response.status_code == 201:
            return None
        location = response.headers.get("Location")
        if not location:
            raise DockyardError("unsupported_media_type", f"{what}: {self.name} started an upload without saying where to send it")
        return location

    def put_manifest(self, path: str, ref: str, body: bytes, media_type: str) -> None:
        response = self.endpoint.request(
            "PUT",
            f"/v2/{path}/manifests/{ref}",
            scope=self._scope(path),
            what=f"pushing manifest {path}:{ref} to {self.name}",
            headers={"Content-Type": media_type},
            data=body,
            ok=(201, 204),
        )
        response.close()


def _pull_scope(reference: Reference) -> str:
    return f"repository:{reference.path}:pull"


def _range_matches(content_range: Optional[str], offset: int, total: int) -> bool:
    try:
        unit, _sep, rest = (content_range or "").partition(" ")
        span, _sep, size = rest.partition("/")
        start = int(span.split("-")[0])
        return unit == "bytes" and start == offset and int(size) == total
    except ValueError:
        return False


def _read_capped(response, limit: int, reference: Reference) -> bytes:
    with response:
        data = bytearray()
        for chunk in response.iter_content(CHUNK):
            data += chunk
            if len(data) > limit:
                raise DockyardError("unsupported_media_type", f"{reference.familiar}: manifest larger than {limit} bytes; refused")
        return bytes(data)


def index_entries(reference: Reference, body: bytes) -> list:
    """The manifest descriptors an index lists, as JSON objects."""
    entries = _json(body, reference).get("manifests") or []
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise DockyardError("unsupported_media_type", f"{reference.familiar}: the index's manifests are not a list of descriptors")
    return entries


def image_blobs(reference: Reference, digest: str, body: bytes, media_type: str) -> tuple:
    """(config, layers) that an image manifest names."""
    if media_type not in MANIFEST_TYPES:
        raise DockyardError("unsupported_media_type", f"{reference.familiar}: manifest type {media_type} is not supported")
    manifest = _json(body, reference)
    try:
        return Descriptor.from_json(manifest["config"]), tuple(Descriptor.from_json(layer) for layer in manifest.get("layers") or [])
    except (KeyError, TypeError):
        raise DockyardError("unsupported_media_type", f"{reference.familiar}: manifest {digest} has no config") from None


def _json(body: bytes, reference: Reference) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DockyardError("unsupported_media_type", f"{reference.familiar}: the registry returned a manifest that is not a JSON object")
    return data


def _manifest_body(response, reference: Reference) -> tuple:
    """(bytes, the type its Content-Type names) of a manifest response, its size capped."""
    return _read_capped(response, MAX_MANIFEST_BYTES, reference), (response.headers.get("Content-Type") or "").split(";")[0].strip()


def _manifest_media_type(body: bytes, header_type: str, reference: Reference) -> str:
    """The manifest's type from Content-Type, checked against the body's own mediaType."""
    data = _json(body, reference)
    body_type = data.get("mediaType") or ""
    if header_type in SCHEMA1_TYPES or body_type in SCHEMA1_TYPES or data.get("schemaVersion") == 1:
        raise DockyardError(
            "unsupported_media_type", f"{reference.familiar}: Docker schema1 manifests are not supported; push the image again with a current client"
        )
    if body_type and header_type and header_type in INDEX_TYPES + MANIFEST_TYPES and body_type != header_type:
        raise DockyardError("unsupported_media_type", f"{reference.familiar}: the registry labelled a {body_type} manifest as {header_type}")
    media_type = body_type or header_type
    if not media_type:
        media_type = OCI_INDEX if "manifests" in data else OCI_MANIFEST
    return media_type


RESOLVE_WORKERS = 8


def resolve_workers(images: int) -> int:
    """Threads that resolve `images` images at once; the connection pool must hold as many."""
    return max(1, min(images, RESOLVE_WORKERS))


class RegistryClient:
    """All registries a task talks to, sharing one connection pool, credentials and options."""

    def __init__(self, credentials: CredentialStore, options: RegistryOptions, pool_size: int = 10):
        self.credentials = credentials
        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max(pool_size, 4), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._registries = {}
        self._lock = threading.Lock()

    def destination(self, url: str) -> Destination:
        """The registry at `url` to push into, with the credentials registry_auth gives its host."""
        return Destination(endpoint_for_url(self.session, url, self.credentials, self.options))

    def for_reference(self, reference: Reference) -> Registry:
        return self.registry(reference.domain)

    def registry(self, domain: str) -> Registry:
        domain = registry_host(domain)
        with self._lock:
            if domain not in self._registries:
                self._registries[domain] = Registry(domain, self.session, self.credentials, self.options)
            return self._registries[domain]

    @property
    def warnings(self) -> list:
        return [w for r in self._registries.values() for w in r.warnings]

    def rate_limit(self) -> Optional[dict]:
        """The most recent rate-limit figures any registry sent, or None if none did."""
        for registry in self._registries.values():
            if registry.rate_limit.remaining is not None or registry.rate_limit.limit is not None:
                return registry.rate_limit.to_dict()
        return None
