# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP to registries: schemes, retries, deadlines, challenges, tokens, and who gets credentials.

Every request the collection sends to a registry, a mirror or a token service goes through
`Transport.send`, and `send` asks one rule, `may_carry_credentials`, at every hop: a registry's
credentials go only to that registry's own origin (scheme, host, port) and to the token realm its
own challenge named; a redirect, `Link`, upload `Location` or realm on another origin gets none;
nothing is sent over plain HTTP unless the host is loopback or listed in insecure_registries.
Redirects are followed here, hop by hop, never by requests.

Deadlines: a connection must open within min(timeout, 10) seconds, the headers of an answer must
arrive within `timeout` seconds, an answer other than a blob must arrive whole within `timeout`
seconds more, and a blob at MIN_RATE bytes a second or faster over every `timeout`-second window.
A slow answer fails `unreachable` at once, without retries.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import ipaddress
import json
import random
import socket
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional
from urllib.parse import urlencode, urljoin, urlsplit

from ansible_collections.dockyard.images.plugins.module_utils._auth import Credential, CredentialStore, basic_header, keep_secret, redact_userinfo, scrub, shown
from ansible_collections.dockyard.images.plugins.module_utils._blob import CHUNK
from ansible_collections.dockyard.images.plugins.module_utils._endpoints import EndpointAddress, RegistryOptions
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._requests import (
    HAS_REQUESTS,
    HTTPAdapter,
    HTTPConnection,
    HTTPConnectionPool,
    HTTPSConnection,
    HTTPSConnectionPool,
    requests,
    require_requests,
    urllib3,
)

DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
DOCKER_HUB_INDEX = "https://index.docker.io"
RETRYABLE_STATUS = frozenset((408, 499, 500, 502, 503, 504, 522))
REDIRECT_STATUS = frozenset((301, 302, 303, 307, 308))
MAX_REDIRECTS = 5
MIN_RATE = 1024  # bytes a second, averaged over each window of `timeout` seconds
MAX_SMALL_BODY = 1024 * 1024  # an error, a token, a page of tags: anything larger is not what was asked for
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
_STATUS_REASONS = {401: "unauthorized", 403: "denied", 404: "not_found", 410: "not_found", 429: "rate_limited"}
_HINTS = {
    "unauthorized": "check registry_auth or the docker config",
    "denied": "the credentials lack access to this repository",
    "not_found": "check the repository name and tag",
    "rate_limited": "wait, authenticate, or use a mirror",
}


def reason_for(status: int, codes: list) -> str:
    """The one place that maps an HTTP status and registry error codes to a reason."""
    for code in codes:
        if code in _CODE_REASONS:
            return _CODE_REASONS[code]
    return _STATUS_REASONS.get(status, "unreachable")


@dataclass
class RateLimit:
    """The rate-limit headers a registry sent last (Docker Hub sends them)."""

    limit: Optional[str] = None
    remaining: Optional[str] = None
    source: Optional[str] = None

    def to_dict(self) -> dict:
        return {"limit": self.limit, "remaining": self.remaining, "source": self.source}


# -- origins and the credential rule ------------------------------------------------------------


class Origin(NamedTuple):
    """Where a URL leads: scheme, host and port. Credentials belong to exactly one origin."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin `url` leads to, as the connection will be made; NOWHERE when that is not certain.

        Python's and urllib3's URL parsers must agree on it: a URL they read differently
        (`https://evil\\@registry/`) leads nowhere credentials may go.
        """
        try:
            parts, parsed = urlsplit(url), urllib3.util.parse_url(url)
            port = parts.port
        except (ValueError, urllib3.exceptions.LocationParseError):
            return NOWHERE
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if not host or (parsed.scheme or "").lower() != scheme or (parsed.host or "").lower().strip("[]") != host or parsed.port != port:
            return NOWHERE
        if port is None:
            port = 443 if scheme == "https" else 80
        return cls(scheme, host, port)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


NOWHERE = Origin("", "", -1)  # what an unusable URL leads to: no credentials ever belong there


def is_loopback(netloc: str) -> bool:
    """Whether `netloc` (host[:port]) names this machine: localhost or a loopback address literal."""
    try:
        host = urlsplit("//" + netloc).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_allowed(netloc: str, insecure_registries: tuple) -> bool:
    """Plain HTTP may carry credentials only on loopback (it never leaves the machine) or to a host:port listed insecure."""
    return is_loopback(netloc) or netloc in insecure_registries


def may_carry_credentials(url: str, owner: Optional[Origin], insecure_registries: tuple) -> bool:
    """The one rule for every request: may `url` carry the credentials that belong to `owner`?

    Only when it leads to that very origin, and over TLS unless plain HTTP is allowed there.
    """
    target = Origin.of(url)
    if owner is None or target == NOWHERE or target != owner:
        return False
    return target.scheme == "https" or (target.scheme == "http" and plain_http_allowed(urlsplit(url).netloc, insecure_registries))


def check_realm(realm: str, registry: Origin, insecure_registries: tuple) -> Origin:
    """The origin of a token realm the registry's own challenge named, if credentials may go there.

    Refused: a realm that is not an http(s) URL; plain HTTP to a host that is neither loopback nor
    listed insecure; an address more private than the registry's own (a registry must not steer
    credentials into the network it is reached from).
    """
    try:
        parts = urlsplit(realm)
        valid = parts.scheme in ("https", "http") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise DockyardError("unauthorized", f"the registry named an invalid token realm {shown(realm, 200)}")
    origin = Origin.of(realm)
    if origin == NOWHERE:
        raise DockyardError("unauthorized", f"the registry named a token realm whose host is ambiguous: {shown(realm, 200)}")
    if origin == registry:
        return origin
    if parts.scheme == "http" and not plain_http_allowed(parts.netloc, insecure_registries):
        raise DockyardError(
            "tls",
            f"the registry's token realm {realm} is plain HTTP on another host; credentials never travel there in clear text. "
            "Serve the token service over https, or list its host:port in insecure_registries",
        )
    if _privacy(origin.host) > _privacy(registry.host):
        raise DockyardError("unauthorized", f"the registry named token realm {realm}, an address more private than the registry's own; refused")
    return origin


def _ip(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _privacy(host: str) -> int:
    """How private a host is: the most private of the addresses it stands for, found as a connection finds them
    (so `localhost`, `127.1`, `2130706433` or `[::ffff:127.0.0.1]` are loopback, as 127.0.0.1 is)."""
    literal = _ip(host)
    if literal is not None:
        return _private_rank(literal)
    try:
        found = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError):
        return 0  # no address: nothing will be sent there
    return max((_private_rank(_ip(info[4][0].split("%", 1)[0])) for info in found), default=0)


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: inside a provider's network, as private ones are
_EMBEDDING = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b::/96"))  # IPv4-compatible, NAT64


def _private_rank(address) -> int:
    if address is None:
        return 0
    if address.version == 6:
        address = _embedded_ipv4(address) or address
    if address.is_loopback or address.is_unspecified:
        return 3
    if address.is_link_local:
        return 2
    if address.is_private or (address.version == 4 and address in _SHARED):
        return 1
    return 0


def _embedded_ipv4(address):
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, IPv4-compatible or NAT64), else None."""
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if int(address) > 1 and any(address in network for network in _EMBEDDING):  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


# -- challenges and tokens ----------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: its scheme and parameters."""

    scheme: str
    params: dict

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list:
    """Parse a WWW-Authenticate header that may hold several challenges (RFC 7235)."""
    challenges, i, n = [], 0, len(header or "")
    while i < n:
        while i < n and header[i] in " ,":
            i += 1
        start = i
        while i < n and header[i] not in " ,=":
            i += 1
        scheme = header[start:i]
        if not scheme:
            break
        params = {}
        while True:
            j = i
            while j < n and header[j] in " ,":
                j += 1
            k = j
            while k < n and header[k] not in " ,=":
                k += 1
            if k >= n or header[k] != "=" or k == j:
                i = j
                break  # the next token is a new scheme, not a parameter
            key, i = header[j:k].lower(), k + 1
            if i < n and header[i] == '"':
                i += 1
                value = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value.append(header[i])
                    i += 1
                i += 1
                params[key] = "".join(value)
            else:
                start = i
                while i < n and header[i] not in " ,":
                    i += 1
                params[key] = header[start:i]
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


TOKEN_DEFAULT_LIFETIME = 60
TOKEN_REFRESH_MARGIN = 10


class TokenCache:
    """Bearer tokens keyed by realm, service, scopes and identity, valid until near expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._tokens = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key) -> Optional[str]:
        with self._lock:
            found = self._tokens.get(key)
            if found and found[1] > self._clock():
                return found[0]
            return None

    def put(self, key, token: str, expires_in) -> None:
        keep_secret(token)  # expired or not, never to be repeated
        valid = isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0
        lifetime = min(expires_in, 86400) if valid else TOKEN_DEFAULT_LIFETIME
        with self._lock:
            self._tokens[key] = (token, self._clock() + max(lifetime - TOKEN_REFRESH_MARGIN, 1))


# -- headers a registry sends --------------------------------------------------------------------


def retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date); None if it says nothing usable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit() and value.isascii():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def next_link(header: Optional[str], base_url: str) -> Optional[str]:
    """The absolute URL of the `rel="next"` link in a Link header (RFC 8288), or None."""
    for part in (header or "").split(","):
        target, _sep, params = part.strip().partition(";")
        target = target.strip()
        if not (target.startswith("<") and target.endswith(">")):
            continue
        relations = [p.strip() for p in params.split(";")]
        if any(r.replace(" ", "").lower() in ('rel="next"', "rel=next") for r in relations):
            try:
                return urljoin(base_url, target[1:-1].strip())
            except ValueError:
                return None
    return None


# -- deadlines ----------------------------------------------------------------------------------


class HeadersTooSlow(Exception):
    """An answer's headers did not arrive within the read timeout."""


class _HeaderDeadline:
    """A connection whose answer must start within its read timeout: a watchdog shuts the socket
    if the headers trickle in slower (a socket timeout alone bounds each read, not all of them)."""

    def getresponse(self):
        sock, fired = self.sock, threading.Event()

        def expire():
            fired.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        # the read timeout: urllib3 2 keeps it in self.timeout, urllib3 1.26 (Debian's) on the socket
        limits = [value for value in (self.timeout, sock.gettimeout() if sock else None) if isinstance(value, (int, float)) and value > 0]
        limit = max(limits) if limits else 60.0
        watchdog = threading.Timer(limit, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            return super().getresponse()
        except Exception:
            if fired.is_set():
                raise HeadersTooSlow(f"no complete answer within {limit:.0f} s") from None
            raise
        finally:
            watchdog.cancel()


class _DeadlineHTTPConnection(_HeaderDeadline, HTTPConnection):
    """HTTP with a deadline on the headers."""


class _DeadlineHTTPSConnection(_HeaderDeadline, HTTPSConnection):
    """HTTPS with a deadline on the headers."""


class _DeadlineHTTPPool(HTTPConnectionPool):
    """A pool of HTTP connections with header deadlines."""

    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    """A pool of HTTPS connections with header deadlines."""

    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose pools enforce header deadlines."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class Pace:
    """The least progress a body must make: MIN_RATE bytes a second over every `window` seconds."""

    def __init__(self, window: float, what: str, clock: Callable[[], float] = time.monotonic):
        self.window, self.what, self._clock = window, what, clock
        self._start, self._count = clock(), 0

    def advance(self, count: int) -> None:
        self._count += count
        elapsed = self._clock() - self._start
        if elapsed < self.window:
            return
        if self._count < MIN_RATE * self.window:
            raise DockyardError(
                "unreachable",
                f"{self.what}: only {self._count} bytes arrived in {elapsed:.0f} s, slower than {MIN_RATE} bytes a second; "
                "the transfer was stopped (a larger timeout allows slower links)",
            )
        self._start, self._count = self._clock(), 0


class BodyBroken(Exception):
    """A body broke off: the connection was reset or closed before its end."""


def _read_available(raw) -> bytes:
    """What has arrived of the body, up to CHUNK bytes, without waiting for more: one read on the socket.

    urllib3 2 has read1; urllib3 1.26 (what Debian 11 and 12 ship with python3-requests) has not, so
    its http.client response is read directly, and the connection goes back to the pool at the end.
    """
    if hasattr(raw, "read1"):
        return raw.read1(CHUNK, decode_content=False)
    chunk = raw._fp.read1(CHUNK)
    if not chunk and raw._fp.isclosed():
        raw.release_conn()
    return chunk


def raw_chunks(response, window: float, what: str):
    """The body's bytes as they arrive (not decoded), failing when it comes slower than the Pace allows.

    A connection that breaks raises BodyBroken, so that a caller who can resume (a blob) may.
    """
    pace = Pace(window, what)
    while True:
        try:
            chunk = _read_available(response.raw)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise BodyBroken(short(exc)) from None
        pace.advance(len(chunk))
        if not chunk:
            return
        yield chunk


def read_body(response, limit: int, window: float, what: str, too_large: str = "unsupported_media_type") -> bytes:
    """A whole body of at most `limit` bytes (decoded if the server compressed it anyway); the response is done with.

    Such an answer (a manifest, a token, a page of tags, an error) must arrive whole within `window`
    seconds of its headers; only blobs may take longer, at the minimum rate.
    """
    deadline = time.monotonic() + window
    data = bytearray()
    try:
        for chunk in raw_chunks(response, window, what):
            data += chunk
            if len(data) > limit:
                raise DockyardError(too_large, f"{what}: the answer is larger than {limit} bytes; refused")
            if time.monotonic() > deadline:
                raise DockyardError("unreachable", f"{what}: the answer did not arrive whole within {window:.0f} s; stopped")
    except BodyBroken as exc:
        response.close()
        raise DockyardError("unreachable", f"{what}: the answer broke off: {exc}") from None
    except BaseException:
        response.close()  # what is left of a refused answer is not read: its connection goes
        raise
    release(response)  # read whole: its connection serves the next request
    encoding = (response.headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding != "deflate" else zlib.MAX_WBITS)
        try:
            decoded = decoder.decompress(bytes(data), limit + 1)
        except zlib.error:
            raise DockyardError("unsupported_media_type", f"{what}: the answer claims {encoding} encoding but does not decode") from None
        if len(decoded) > limit:
            raise DockyardError(too_large, f"{what}: the answer is larger than {limit} bytes once decoded; refused")
        return decoded
    return bytes(data)


# -- sending ------------------------------------------------------------------------------------


class _NoNetrc(requests.auth.AuthBase if HAS_REQUESTS else object):
    """Set as the session's auth so that requests never adds credentials of its own (from ~/.netrc)."""

    def __call__(self, request):
        return request


class Transport:
    """One connection pool for a task, and the one way a request leaves it."""

    def __init__(self, options: RegistryOptions, pool_size: int = 10):
        require_requests()
        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept-Encoding"] = "identity"  # bytes as stored: digests hold, no decompression to bound
        self.session.auth = _NoNetrc()
        adapter = _DeadlineAdapter(pool_connections=8, pool_maxsize=max(pool_size, 4), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        authorization: Optional[str] = None,
        owner: Optional[Origin] = None,
        headers: Optional[dict] = None,
        params=None,
        data=None,
        verify=True,
        follow_redirects: bool = True,
    ):
        """Send one request, following redirects hop by hop; `authorization` goes only where the rule allows.

        The answer is streamed: read it with `read_body` or `raw_chunks`, or close it.
        """
        for _hop in range(MAX_REDIRECTS + 1):
            if Origin.of(url).scheme not in ("http", "https"):
                raise DockyardError("unreachable", f"{what}: the registry sent us to {shown(redact_userinfo(url), 200)}, which is not a usable http(s) URL")
            hop_headers = dict(headers or {})
            if authorization and may_carry_credentials(url, owner, self.options.insecure_registries):
                hop_headers["Authorization"] = authorization
            if hasattr(data, "seek"):
                data.seek(0)
            try:
                response = self._send_once(method, url, hop_headers, params, data, verify)
            except HeadersTooSlow as exc:
                raise DockyardError("unreachable", f"{what}: {Origin.of(url).netloc} is too slow: {exc}") from None
            if not (follow_redirects and response.status_code in REDIRECT_STATUS and response.headers.get("Location")):
                return response
            response.close()
            try:
                url = urljoin(response.url, response.headers["Location"])
            except ValueError:
                raise DockyardError("unreachable", f"{what}: the registry redirected to an invalid URL") from None
            params = None  # they are part of the URL now
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, data = "GET", None
        raise DockyardError("unreachable", f"{what}: more than {MAX_REDIRECTS} redirects; refused")

    def _send_once(self, method: str, url: str, headers: dict, params, data, verify):
        """One request and its answer's headers, through the adapter itself: Session.send would read
        a redirect's whole body (to prepare the next hop) before any limit or deadline of ours applies."""
        prepared = self.session.prepare_request(requests.Request(method, url, headers=headers, params=params, data=data))
        settings = self.session.merge_environment_settings(prepared.url, {}, True, verify, None)  # proxies from the environment
        timeout = self.options.timeout
        return self.session.get_adapter(prepared.url).send(prepared, timeout=(min(timeout, 10), timeout), **settings)


# -- one registry endpoint ----------------------------------------------------------------------


class Endpoint:
    """One base URL (the registry or a mirror) with its own credentials, auth state and retries."""

    def __init__(
        self,
        transport: Transport,
        netloc: str,
        credential: Optional[Credential] = None,
        *,
        base_url: Optional[str] = None,
        insecure: bool = False,
        plain_http: bool = False,
    ):
        self.transport = transport
        self.netloc = netloc
        self.credential = credential or Credential()
        self.options = transport.options
        self.insecure = insecure  # listed in insecure_registries: TLS is not verified
        self.plain_http = plain_http or insecure  # may fall back to http when TLS is not spoken
        self._http_first = plain_http  # loopback: asking over http first costs no TLS setup
        self._base_url = base_url
        self._base_lock = threading.Lock()
        self._tokens = TokenCache()
        self._auth_lock = threading.Lock()  # one token request per scope, however many workers wait
        self._challenge = None
        self._realm = None  # the origin of the realm the challenge named, once checked
        self._basic = False
        self.rate_limit = RateLimit()

    def base_url(self) -> str:
        """The scheme is https unless the registry is insecure and does not speak TLS."""
        with self._base_lock:
            if self._base_url is None:
                self._base_url = self._probe_scheme()
            return self._base_url

    @property
    def origin(self) -> Origin:
        return Origin.of(self.base_url())

    def _probe_scheme(self) -> str:
        https = f"https://{self.netloc}"
        if not self.plain_http:
            return https
        if self._http_first:
            spoken = self._plain_http_answer()
            if spoken == "http":
                return f"http://{self.netloc}"
            if spoken == "tls":  # a TLS port that answered plain HTTP: no second probe, no round trips spent on it
                return https
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                self.transport.send("GET", https + "/v2/", what=f"probing {self.netloc}", verify=False, follow_redirects=False).close()
            return https  # it speaks TLS: requests go over https, verified as configured
        except (requests.exceptions.RequestException, DockyardError):
            return f"http://{self.netloc}"

    def _plain_http_answer(self) -> Optional[str]:
        """How the port answers plain HTTP (HEAD: no GET is spent): "http", or "tls" for the 400 a TLS port gives
        a plain request, or None when it gives no answer."""
        try:
            response = self.transport.send("HEAD", f"http://{self.netloc}/v2/", what=f"probing {self.netloc}", follow_redirects=False)
            release(response)
            return "tls" if response.status_code == 400 else "http"
        except (requests.exceptions.RequestException, DockyardError):
            return None

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.base_url() + path_or_url

    def request(self, method: str, path: str, *, scope: str, what: str, headers=None, params=None, ok=(200,), data=None):
        """Send a request with auth and retries; return the (streamed) response whose status is in `ok`.

        `path` is a path on this endpoint or an absolute URL (a Link, an upload Location): credentials
        follow the rule whatever it names. `data` is a body: bytes, or a seekable file rewound before every attempt.
        """
        url = self.url(path)
        attempt = 0
        authorized_retry = False
        while True:
            authorization = self._authorization(scope, what)
            try:
                response = self.transport.send(
                    method,
                    url,
                    what=what,
                    authorization=authorization,
                    owner=self.origin,
                    headers=headers,
                    params=params,
                    data=data,
                    verify=self._verify(),
                )
            except requests.exceptions.SSLError as exc:
                raise DockyardError("tls", f"{what}: TLS failed talking to {self.netloc}: {short(exc)}; set ca_path, or validate_certs: false") from None
            except requests.exceptions.RequestException as exc:
                attempt += 1
                if attempt > self.options.retries:
                    raise DockyardError("unreachable", f"{what}: cannot reach {self.netloc} after {attempt} attempts: {short(exc)}") from None
                self.sleep_backoff(attempt)
                continue
            self._record_rate_limit(response)
            if response.status_code in ok:
                return response
            # only this endpoint's own origin may ask for its credentials
            if response.status_code == 401 and not authorized_retry and Origin.of(response.url) == self.origin:
                authorized_retry = True
                if self._authenticate(response, scope, what, authorization):
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

    def read(self, response, what: str, limit: int = MAX_SMALL_BODY) -> bytes:
        """The whole body of a response this endpoint returned, paced and capped."""
        return read_body(response, limit, self.options.timeout, what)

    def _verify(self):
        if self.insecure or not self.options.validate_certs:
            return False
        return self.options.ca_path or True

    def _retry_delay(self, response, attempt: int) -> Optional[float]:
        if response.status_code == 429:
            wait = retry_after(response.headers.get("Retry-After"))
            if wait is not None:
                return wait if wait <= min(self.options.max_retry_after, self.options.timeout) else None  # longer: rate_limited now
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_cap, self.options.timeout, self.options.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def sleep_backoff(self, attempt: int) -> None:
        time.sleep(self._backoff(attempt))

    def _record_rate_limit(self, response) -> None:
        if "ratelimit-remaining" in response.headers or "ratelimit-limit" in response.headers:
            self.rate_limit = RateLimit(
                response.headers.get("ratelimit-limit"), response.headers.get("ratelimit-remaining"), response.headers.get("docker-ratelimit-source")
            )

    # -- credentials -----------------------------------------------------------------------------

    def _authorization(self, scope: str, what: str) -> Optional[str]:
        """The Authorization value for this endpoint's origin and `scope`, fetching a token once the registry asked for one."""
        if self._basic:
            return basic_header(*self.credential.basic)
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
        return (self._challenge.realm, self._challenge.params.get("service", ""), scope, self.credential.identity)

    def _authenticate(self, response, scope: str, what: str, sent: Optional[str]) -> bool:
        """Answer a 401 challenge of this endpoint's own origin; True when a retry with new credentials makes sense.

        `sent` is the Authorization the request carried: requests sent at once all meet the challenge,
        and each retries once with what the first one set up. A token is fetched only when none is
        cached for the scope or the request carried the cached one (the registry refused it).
        """
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            realm = check_realm(bearer.realm, self.origin, self.options.insecure_registries)
            wanted = [s for s in (bearer.params.get("scope", ""), scope) if s]
            with self._auth_lock:
                self._challenge, self._realm = bearer, realm
                cached = self._tokens.get(self._token_key(scope))
                if cached is None or sent == f"Bearer {cached}":
                    self._fetch_token(wanted, scope, what)
            return True
        if any(c.scheme == "basic" for c in challenges) and self.credential.basic:
            self._basic = True
            return not (sent or "").startswith("Basic ")
        return False

    def _fetch_token(self, scopes: list, cache_scope: str, what: str) -> None:
        challenge, realm = self._challenge, self._realm
        credential = self.credential
        if credential.registry_token:
            self._tokens.put(self._token_key(cache_scope), credential.registry_token, None)
            return
        service = challenge.params.get("service", "")
        params = [("service", service)] if service else []
        params += [("scope", s) for s in dict.fromkeys(scopes)]
        # the realm is the one the registry's own challenge named, checked: it may receive the credentials
        send = {"what": f"{what}: asking token service {realm.netloc}", "owner": realm, "verify": self._verify(), "follow_redirects": False}
        try:
            if credential.identity_token and may_carry_credentials(challenge.realm, realm, self.options.insecure_registries):
                form = {"grant_type": "refresh_token", "refresh_token": credential.identity_token, "client_id": USER_AGENT}
                form.update({"service": service, "scope": " ".join(dict.fromkeys(scopes))})
                reply = self.transport.send("POST", challenge.realm, data=form, **send)
            else:
                if credential.basic:
                    params.append(("account", credential.username))
                url = challenge.realm + ("&" if "?" in challenge.realm else "?") + urlencode(params)
                authorization = basic_header(*credential.basic) if credential.basic else None
                reply = self.transport.send("GET", url, authorization=authorization, **send)
        except requests.exceptions.SSLError as exc:
            raise DockyardError("tls", f"{what}: TLS failed talking to token service {realm.netloc}: {short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise DockyardError("unreachable", f"{what}: cannot reach token service {realm.netloc}: {short(exc)}") from None
        if reply.status_code in (401, 403):
            reply.close()
            who = f"user {credential.username!r}" if credential.username else "anonymous access"
            raise DockyardError("unauthorized", f"{what}: the token service of {self.netloc} refused {who}; check registry_auth or the docker config")
        if reply.status_code != 200:
            reply.close()
            raise DockyardError(reason_for(reply.status_code, []), f"{what}: token service {realm.netloc} answered HTTP {reply.status_code}")
        body = _json_or_none(read_body(reply, MAX_SMALL_BODY, self.options.timeout, f"{what}: reading a token"))
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not token.isascii() or not token.isprintable():
            raise DockyardError("unauthorized", f"{what}: token service {realm.netloc} returned no usable token")
        self._tokens.put(self._token_key(cache_scope), token, body.get("expires_in"))

    # -- errors ----------------------------------------------------------------------------------

    def _error(self, response, what: str) -> DockyardError:
        codes, messages = [], []
        try:
            body = read_body(response, 64 * 1024, self.options.timeout, what)
        except DockyardError:
            body = b""
        data = _json_or_none(body)
        for item in (data.get("errors") if isinstance(data, dict) else None) or []:
            if not isinstance(item, dict):
                continue
            codes.append(str(item.get("code", "UNKNOWN")).upper())
            if item.get("message"):
                messages.append(str(item["message"])[:300])
            # a pull-through cache wraps what its upstream said in an UNKNOWN error's detail
            detail = item.get("detail")
            inner = detail.get("errors") if isinstance(detail, dict) else None
            codes.extend(str(error.get("code", "")).upper() for error in inner or () if isinstance(error, dict))
        reason = reason_for(response.status_code, codes)
        detail = scrub("; ".join(messages) or response.reason or "")
        hint = _HINTS.get(reason, "")
        message = f"{what}: {self.netloc} answered HTTP {response.status_code}" + (f" ({detail})" if detail else "") + (f"; {hint}" if hint else "")
        error = DockyardError(reason, message, http_status=response.status_code)
        if reason == "rate_limited":
            error.details["retry_after"] = response.headers.get("Retry-After")
        return error


def _json_or_none(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def release(response) -> None:
    """Done with an answer whose body was read whole, or has none (a HEAD's): its connection goes back to
    the pool for the next request. close() alone would drop it (urllib3 1.26 does when the body was read
    past its reader), and the next request would pay a new connection and TLS handshake (two round trips)."""
    drain = getattr(response.raw, "drain_conn", None)
    if drain is not None:
        with contextlib.suppress(Exception):  # a connection that cannot be drained is closed below
            drain()
    response.close()


def short(exc: Exception) -> str:
    """What went wrong, in words: the cause a wrapped connection error carries, not the pool that reported it."""
    cause = exc.args[0] if exc.args else None
    text = scrub(str(getattr(cause, "reason", None) or exc))  # blanked before the cut, which would halve a secret
    return text if len(text) < 300 else text[:300] + "…"


# -- endpoints named by the user ----------------------------------------------------------------


def endpoint_at(transport: Transport, address: EndpointAddress, credentials: Optional[CredentialStore]) -> Endpoint:
    """The endpoint at `address`, with what `credentials` hold for its own host (none when `credentials` is None)."""
    credential = credentials.lookup(address.netloc) if credentials else None
    insecure = address.netloc in transport.options.insecure_registries
    if address.scheme is None:
        return Endpoint(transport, address.netloc, credential, insecure=insecure, plain_http=is_loopback(address.netloc))
    return Endpoint(
        transport, address.netloc, credential, base_url=f"{address.scheme}://{address.netloc}", insecure=insecure, plain_http=address.scheme == "http"
    )


def registry_endpoint(transport: Transport, domain: str, credentials: CredentialStore) -> Endpoint:
    """The endpoint of a registry a reference names (Docker Hub's API host for docker.io)."""
    if domain == "docker.io":
        return Endpoint(transport, "registry-1.docker.io", credentials.lookup(domain), base_url=DOCKER_HUB_ENDPOINT)
    return Endpoint(transport, domain, credentials.lookup(domain), insecure=domain in transport.options.insecure_registries, plain_http=is_loopback(domain))


def repository_path(repository: str, kind: str, ref: str = "") -> str:
    """The one place API paths are built: `/v2/<repository>/<kind>/<ref>` (kind: manifests, blobs, tags/list, blobs/uploads/)."""
    return f"/v2/{repository}/{kind}/{ref}" if ref else f"/v2/{repository}/{kind}"
