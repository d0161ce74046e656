# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A registry client for the OCI Distribution / Docker Registry HTTP API v2: reading (with mirrors) and pushing.

It knows no store: callers hand it a way to read manifests they already hold and a sink to
stream blobs into. HTTP, credentials and deadlines live in _transport.py; what manifests mean in
_manifest.py. Every failure is a DockyardError.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import threading
from typing import Callable, NamedTuple, Optional
from urllib.parse import urljoin

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore, redact_userinfo, registry_host, shown
from ansible_collections.dockyard.images.plugins.module_utils._blob import BlobSink, MemorySink, sha256_digest
from ansible_collections.dockyard.images.plugins.module_utils._endpoints import parse_endpoint_address
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import (
    ACCEPT,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    ResolvedImage,
    image_blobs,
    index_entries,
    json_object,
    manifest_media_type,
)
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, choose_manifest
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, is_digest, is_registry_host
from ansible_collections.dockyard.images.plugins.module_utils._transport import (
    DOCKER_HUB_INDEX,
    BodyBroken,
    Endpoint,
    RateLimit,
    RegistryOptions,
    Transport,
    endpoint_at,
    next_link,
    raw_chunks,
    registry_endpoint,
    release,
    repository_path,
)

MAX_PAGES = 1000  # of tags or repositories: a million names at 1,000 a page; more is a registry that never stops


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


class ManifestResponse(NamedTuple):
    """A manifest as a registry answered it: its bytes (size capped), and what the headers claim."""

    body: bytes
    header_type: str  # the media type Content-Type names
    header_digest: Optional[str]  # Docker-Content-Digest


def _read_manifest(endpoint: Endpoint, response, what: str) -> ManifestResponse:
    header_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
    return ManifestResponse(endpoint.read(response, what, MAX_MANIFEST_BYTES), header_type, response.headers.get("Docker-Content-Digest"))


class Registry:
    """One registry: its mirrors in order, then the registry itself."""

    def __init__(self, domain: str, transport: Transport, credentials: CredentialStore):
        self.domain = domain
        self.options = transport.options
        self.upstream = registry_endpoint(transport, domain, credentials)
        # a mirror is a registry of its own: it gets the credentials given for its own host, never the upstream's
        self.endpoints = [endpoint_at(transport, address, credentials) for address in self.options.mirrors.get(domain, ())] + [self.upstream]
        # Docker Hub searches on its index host; any other registry may answer /v1/search itself.
        self.index = Endpoint(transport, "index.docker.io", credentials.lookup(domain), base_url=DOCKER_HUB_INDEX) if domain == "docker.io" else self.upstream
        self.warnings = []
        self._warned = set()
        self._warning = threading.Lock()  # images are fetched at once: one warning per mirror and reason

    @property
    def rate_limit(self) -> RateLimit:
        return self.upstream.rate_limit

    def _each_endpoint(self, operation: Callable, what: str):
        """Run `operation(endpoint)` on mirrors then upstream; a mirror's failure falls through, with a warning."""
        for endpoint in self.endpoints:
            try:
                return operation(endpoint)
            except DockyardError as exc:
                if endpoint is self.upstream or exc.reason in ("digest_mismatch", "invalid_argument"):
                    raise
                if exc.reason != "not_found":
                    with self._warning:
                        if (endpoint.netloc, exc.reason) not in self._warned:
                            self._warned.add((endpoint.netloc, exc.reason))
                            self.warnings.append(f"mirror {endpoint.netloc} failed ({exc.reason}) {what}, so the next endpoint served it: {exc.message}")
        raise AssertionError("the upstream is always the last endpoint")  # pragma: no cover

    def probe(self) -> None:
        """Find how the first endpoint asked is spoken to, as its first request would (on loopback, one plain-HTTP
        HEAD; elsewhere nothing): a caller that overlaps other work with it chooses that request afterwards."""
        self.endpoints[0].base_url()

    # -- manifests -----------------------------------------------------------------------------

    @staticmethod
    def _manifest_request(endpoint: Endpoint, method: str, reference: Reference, ref: str, what: str):
        return endpoint.request(method, repository_path(reference.path, "manifests", ref), scope=_pull_scope(reference), what=what, headers={"Accept": ACCEPT})

    def head_manifest(self, reference: Reference) -> Optional[str]:
        """The digest a tag points at now, from a HEAD (free on Docker Hub); None if not sent."""
        what = f"resolving {reference.familiar}"

        def head(endpoint: Endpoint):
            response = self._manifest_request(endpoint, "HEAD", reference, reference.manifest_reference, what)
            release(response)
            digest = response.headers.get("Docker-Content-Digest")
            if digest is not None and not is_digest(digest):
                raise DockyardError("unsupported_media_type", f"{what}: {endpoint.netloc} labelled it {shown(digest)}, which is not a digest")
            return digest

        return self._each_endpoint(head, what)

    def get_manifest(self, reference: Reference, ref: str) -> Manifest:
        """GET a manifest by tag or digest, verified when asked for by digest."""
        what = f"fetching manifest {ref} of {reference.familiar}"

        def get(endpoint: Endpoint):
            return _read_manifest(endpoint, self._manifest_request(endpoint, "GET", reference, ref, what), what)

        body, header_type, header_digest = self._each_endpoint(get, what)
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and digest != ref:
            raise DockyardError("digest_mismatch", f"manifest {ref} of {reference.familiar} hashes to {digest}; the registry served other bytes")
        if header_digest and header_digest != digest:
            self.warnings.append(f"{self.domain} labelled manifest {ref} of {reference.familiar} {shown(header_digest)}, but its bytes hash to {digest}")
        return Manifest(body, manifest_media_type(body, header_type, reference.familiar), digest)

    def find_manifest(self, reference: Reference, digest: Optional[str], local_manifest: Callable) -> Manifest:
        """The manifest `digest` names, or the reference's own when None: what `local_manifest(digest)`
        returns, else fetched from the registry."""
        local = local_manifest(digest) if digest else None
        return local if local is not None else self.get_manifest(reference, digest or reference.manifest_reference)

    def resolve(self, reference: Reference, platform: Platform, known_digest: Optional[str], local_manifest: Callable) -> ResolvedImage:
        """Resolve a reference to the manifest for `platform`.

        `known_digest` is the top-level digest already found by a HEAD (or the pin); manifests
        that `local_manifest(digest)` returns are not fetched again.
        """
        what = reference.familiar
        top = self.find_manifest(reference, reference.digest or known_digest, local_manifest)
        manifest, choice_platform, fallback = top, None, False
        if top.is_index:
            choice = choose_manifest(index_entries(top.body, what), platform, MANIFEST_TYPES)
            choice_platform, fallback = choice.platform, choice.fallback
            manifest = self.find_manifest(reference, choice.descriptor["digest"], local_manifest)
        config, layers = image_blobs(manifest, what)
        return ResolvedImage(
            reference=reference, top=top, manifest=manifest, config=config, layers=layers, platform=choice_platform, platform_fallback=fallback
        )

    # -- blobs -----------------------------------------------------------------------------------

    def fetch_blob(self, reference: Reference, descriptor: Descriptor, sink: BlobSink) -> None:
        """Stream a blob into `sink`, resuming with Range after an interruption, then verify it."""
        what = f"fetching blob {descriptor.digest} of {reference.familiar}"
        tried = []

        def attempt(endpoint: Endpoint) -> None:
            if tried:  # bytes from an endpoint that failed are not resumed from another
                sink.restart()
            tried.append(endpoint)
            self._fetch_blob_from(endpoint, reference, descriptor, sink, what)

        self._each_endpoint(attempt, what)

    def _fetch_blob_from(self, endpoint: Endpoint, reference: Reference, descriptor: Descriptor, sink: BlobSink, what: str) -> None:
        resumed = sink.offset > 0
        interruptions = 0
        while sink.offset < descriptor.size:
            offset = sink.offset
            headers = {"Range": f"bytes={offset}-"} if offset else None
            response = endpoint.request(
                "GET", repository_path(reference.path, "blobs", descriptor.digest), scope=_pull_scope(reference), what=what, headers=headers, ok=(200, 206, 416)
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
                    for chunk in raw_chunks(response, self.options.timeout, what):
                        sink.write(chunk)
                        if sink.offset > descriptor.size:
                            break
                except BodyBroken as exc:
                    interruptions += 1
                    if interruptions > self.options.retries:
                        raise DockyardError("unreachable", f"{what}: the download broke off {interruptions} times: {exc}") from None
                    endpoint.sleep_backoff(interruptions)
                    continue
            if sink.offset < descriptor.size:
                interruptions += 1
                if interruptions > self.options.retries:
                    raise DockyardError("unreachable", f"{what}: the registry sent {sink.offset} of {descriptor.size} bytes")
        if sink.offset > descriptor.size:
            sink.restart()
            raise DockyardError("digest_mismatch", f"{what}: the registry sent more than the {descriptor.size} bytes its manifest declares; nothing was stored")
        if sink.digest() != descriptor.digest:
            actual = sink.digest()
            sink.restart()
            if resumed:  # what was held from before may be what is wrong: fetch the whole blob once more
                return self._fetch_blob_from(endpoint, reference, descriptor, sink, what)
            raise DockyardError("digest_mismatch", f"{what}: the bytes {endpoint.netloc} sent hash to {actual}, not {descriptor.digest}; nothing was stored")
        return None

    def fetch_blob_bytes(self, reference: Reference, descriptor: Descriptor, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (a config) into memory, verified like any other."""
        if descriptor.size > limit:
            raise DockyardError("unsupported_media_type", f"{reference.familiar}: blob {descriptor.digest} is too large to read into memory")
        sink = MemorySink(descriptor.digest)
        self.fetch_blob(reference, descriptor, sink)
        return bytes(sink.data)

    # -- tags, catalog and search ----------------------------------------------------------------

    def list_tags(self, reference: Reference, page_size: int = 1000) -> list:
        what = f"listing tags of {reference.familiar}"
        return self._paginate(repository_path(reference.path, "tags/list"), "tags", _pull_scope(reference), what, page_size)

    def search(self, term: str, limit: int) -> Optional[list]:
        """Results of the v1 search endpoint (as docker search uses it), or None when there is none."""
        what = f"searching {self.domain} for {term!r}"
        response = self.index.request("GET", "/v1/search", scope="", what=what, params={"q": term, "n": limit}, ok=(200, 404, 405))
        if response.status_code != 200:
            response.close()
            return None
        try:
            results = json_object(self.index.read(response, what), what).get("results")
        except DockyardError:
            return None
        return [item for item in results if isinstance(item, dict)] if isinstance(results, list) else None

    def catalog(self, page_size: int = 1000) -> list:
        return self._paginate("/v2/_catalog", "repositories", "registry:catalog:*", f"listing repositories of {self.domain}", page_size)

    def _paginate(self, path: str, key: str, scope: str, what: str, page_size: int) -> list:
        """Every page's names; a `Link` to another origin is followed without credentials (the rule in _transport)."""
        items, url, params, seen = [], path, {"n": min(page_size, 1000)}, set()
        endpoint = self.upstream
        while url and url not in seen:
            if len(seen) >= MAX_PAGES:
                raise DockyardError("unsupported_media_type", f"{what}: the registry kept sending more pages after {MAX_PAGES}; stopped")
            seen.add(url)
            response = endpoint.request("GET", url, scope=scope, what=what, params=params)
            page = json_object(endpoint.read(response, what), what).get(key) or []
            if not isinstance(page, list):
                raise DockyardError("unsupported_media_type", f"{what}: the registry's {key} are not a list")
            items.extend(str(item) for item in page if isinstance(item, (str, int)))
            url, params = next_link(response.headers.get("Link"), response.url), None
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
                method, repository_path(path, "manifests", ref), scope=self._scope(path), what=what, headers={"Accept": ACCEPT}, ok=(200, 404)
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
        release(response)
        return response.headers.get("Docker-Content-Digest") or (ref if ref.startswith("sha256:") else None)

    def read_manifest(self, path: str, digest: str) -> Optional[Manifest]:
        """A manifest the destination holds, verified, or None."""
        what = f"reading manifest {digest} of {path} on {self.name}"
        response = self._manifest("GET", path, digest, what)
        if response is None:
            return None
        body, header_type, _digest = _read_manifest(self.endpoint, response, what)
        if sha256_digest(body) != digest:
            raise DockyardError("digest_mismatch", f"{what}: its bytes hash to {sha256_digest(body)}")
        return Manifest(body, manifest_media_type(body, header_type, what), digest)

    def has_blob(self, path: str, digest: str) -> bool:
        what = f"looking up blob {digest} in {path} on {self.name}"
        response = self.endpoint.request("HEAD", repository_path(path, "blobs", digest), scope=self._scope(path), what=what, ok=(200, 404))
        release(response)
        return response.status_code == 200

    def mount_blob(self, path: str, digest: str, source_path: str) -> Optional[str]:
        """Link a blob another repository of the destination holds; None when mounted, else an upload URL."""
        return self._start_upload(path, {"mount": digest, "from": source_path}, f"mounting blob {digest} from {source_path} into {path} on {self.name}")

    def upload_blob(self, path: str, digest: str, size: int, stream, location: Optional[str] = None) -> None:
        """Upload a blob monolithically from the seekable file `stream`; the registry checks the digest.

        The upload URL is where the registry said; credentials go there only if it is the registry's own origin.
        """
        what = f"pushing blob {digest} to {path} on {self.name}"
        location = location or self._start_upload(path, None, what)
        response = self.endpoint.request(
            "PUT",
            location,
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
            "POST",
            repository_path(path, "blobs/uploads/"),
            scope=self._scope(path),
            what=what,
            params=params,
            ok=(201, 202, 405),
            headers={"Content-Length": "0"},
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
        try:
            return urljoin(response.url, location)
        except ValueError:
            raise DockyardError("unsupported_media_type", f"{what}: {self.name} named an invalid upload location") from None

    def put_manifest(self, path: str, ref: str, manifest: Manifest) -> None:
        response = self.endpoint.request(
            "PUT",
            repository_path(path, "manifests", ref),
            scope=self._scope(path),
            what=f"pushing manifest {path}:{ref} to {self.name}",
            headers={"Content-Type": manifest.media_type},
            data=manifest.body,
            ok=(201, 204),
        )
        response.close()


class RegistryClient:
    """All registries a task talks to, sharing one transport (connection pool, options) and credentials."""

    def __init__(self, credentials: CredentialStore, options: RegistryOptions, pool_size: int = 10):
        self.credentials = credentials
        self.options = options
        self.transport = Transport(options, pool_size)
        self._registries = {}
        self._lock = threading.Lock()

    def destination(self, text: str) -> Destination:
        """The registry at `text` (`http(s)://host[:port]` or `host[:port]`) to push into, with the credentials given for its own host."""
        return Destination(endpoint_at(self.transport, parse_endpoint_address(text, "destination"), self.credentials))

    def for_reference(self, reference: Reference) -> Registry:
        return self.registry(reference.domain)

    def registry(self, domain: str) -> Registry:
        domain = registry_host(domain)
        if not is_registry_host(domain):
            raise DockyardError(
                "invalid_argument", f"{shown(redact_userinfo(domain), 200)} is not a registry: give host[:port], as in registry.example.com:5000"
            )
        with self._lock:
            if domain not in self._registries:
                self._registries[domain] = Registry(domain, self.transport, self.credentials)
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
