"""A shaped network on loopback, for a machine without tc netem: a TLS proxy in front of the registry.

    python3 benchmarks/netem.py        # the self-check: what the proxy adds, measured against a direct server

ShapingProxy listens on 127.0.0.1 over TLS (a certificate of the tests' CA, made by trustme as
tests/integration/conftest.py makes it) and forwards each connection, byte for byte, to a plain-HTTP
upstream (the loopback registry) over a connection of its own. It models, for every connection alike:

- latency: a one-way delay of rtt/2 in each direction, pipelined: a chunk read at t goes on at
  t + rtt/2 (after its bytes have passed the bandwidth limits), in order, however many chunks are in
  flight, so that a connection carries a full bandwidth-delay product;
- connection set-up: a new connection waits one rtt (TCP's handshake) before its TLS handshake and one
  more (TLS 1.3's) after it, before its first byte goes on; so a request on a new connection is
  answered no sooner than 3 rtt, on a kept-alive one no sooner than 1 rtt. A client speaking plain
  HTTP to the port is answered `400 Bad Request` after two round trips, as Go's TLS servers (the
  registry's) answer it;
- bandwidth: in each direction, a limit per connection and one shared by all connections, each a
  token bucket one chunk deep (no burst beyond the chunk in hand): a chunk passes when both have let
  its bytes through, in the order the connections asked.

Not modelled: TCP's slow start and receive windows (a new connection here gets its full share at
once, which a real one reaches only after some round trips), loss, jitter, reordering.

The proxy runs an asyncio loop in a background thread of the process that starts it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

CHUNK = 64 * 1024  # read at most this much at once: the granularity of the shaping
QUEUE_CHUNKS = 4096  # chunks in flight one way on one connection before reading stops (far above rtt x rate)
READ_LIMIT = 1024 * 1024  # what a stream buffers before it stops reading its socket
SETUP_TIMEOUT = 30.0
SLACK = 0.001  # waits shorter than this are not slept: the loop's timers are no finer (epoll counts milliseconds)
BURST = 0.005  # a bucket's depth in seconds of its rate (at least one chunk): what a late wake-up may catch up
TLS_RECORD_HANDSHAKE = 0x16  # the first byte of a TLS client hello
GO_PLAIN_HTTP_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


@dataclass
class TLSFiles:
    """The test CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca_file: str  # the CA in PEM (requests' verify, our ca_path, ctr --tlscacert)
    cert_dir: str  # a folder holding the CA as ca.crt (skopeo --src-cert-dir)
    certfile: str
    keyfile: str


def test_certificates(folder: Path) -> TLSFiles:
    """The tests' CA as tests/integration/conftest.py makes it (trustme), and the proxy's certificate."""
    import trustme  # a test requirement: imported only when certificates are made

    cert_dir = folder / "certs.d"
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(str(folder / "ca.pem"), str(cert_dir), str(folder / "cert.pem"), str(folder / "key.pem"))
    ca.cert_pem.write_to_path(files.ca_file)
    ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
    issued.cert_chain_pems[0].write_to_path(files.certfile)
    issued.private_key_pem.write_to_path(files.keyfile)
    return files


class Bucket:
    """A token bucket filling at `rate` bytes a second (None: no limit), BURST seconds deep (at least a chunk),
    kept as a clock: `free_at` is when the bytes asked for so far have all passed. The depth lets a loop that
    wakes late catch up instead of losing the time it overslept."""

    def __init__(self, rate: Optional[float]):
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate must be positive, not {rate}")
        self.rate = rate
        self.depth = max(CHUNK / rate, BURST) if rate else 0.0
        self.free_at = 0.0

    def earliest(self, now: float) -> float:
        """When a new chunk may start passing: now, less what the bucket holds, but not before the previous bytes."""
        return max(now - self.depth, self.free_at)


def passed_at(size: int, now: float, buckets: tuple) -> float:
    """When `size` bytes asked for at `now` have passed every bucket (each charged from the same start)."""
    limited = [bucket for bucket in buckets if bucket.rate is not None]
    start = max([bucket.earliest(now) for bucket in limited], default=now)
    for bucket in limited:
        bucket.free_at = start + size / bucket.rate
    return max([start] + [bucket.free_at for bucket in limited])


class ShapingProxy:
    """A TLS listener on 127.0.0.1 that forwards to `upstream` (host, port) with a round-trip time and bandwidth limits.

    `rtt` in seconds; `per_connection` and `total` in bytes a second each way (None: no limit).
    Counts what passed: `connections`, `bytes_down` (to the clients), `bytes_up`, `plain_http` (clients answered 400);
    `events` lists (monotonic time, connection number, what): "accepted", "plain HTTP", "TLS up" (set-up done,
    the request may leave) and the first line of each request as the proxy reads it from the client.
    """

    def __init__(self, upstream: tuple, rtt: float, per_connection: Optional[float], total: Optional[float], certfile: str, keyfile: str):
        self.upstream = (str(upstream[0]), int(upstream[1]))
        self.rtt, self.per_connection = float(rtt), per_connection
        self.total_down, self.total_up = Bucket(total), Bucket(total)
        Bucket(per_connection)  # checks the rate now rather than at the first connection
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_cert_chain(certfile, keyfile)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.connections = self.bytes_down = self.bytes_up = self.plain_http = 0
        self.events: list = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"shaping-proxy-{self.port}", daemon=True)
        self._tasks: set = set()
        self._accepting: Optional[asyncio.Task] = None

    def start(self) -> ShapingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Every connection dropped, the listener closed and the loop's thread ended."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop.close()
        self.listener.close()

    async def _start(self) -> None:
        self._accepting = asyncio.ensure_future(self._accept())

    async def _stop(self) -> None:
        tasks = [self._accepting, *self._tasks] if self._accepting else list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _address = await loop.sock_accept(self.listener)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # asyncio sets it only on sockets made with proto=TCP
            self.connections += 1
            self.events.append((loop.time(), self.connections, "accepted"))
            task = asyncio.ensure_future(self._connection(client, self.connections))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, client: socket.socket, number: int) -> None:
        """One client connection: its set-up, then both directions shaped until either side closes."""
        loop = asyncio.get_running_loop()
        writers: list = []
        try:
            await asyncio.sleep(self.rtt)  # TCP's handshake: the client's first bytes leave one rtt after its SYN
            first = await asyncio.wait_for(self._peek(client), SETUP_TIMEOUT)
            if not first:
                return
            if first[0] != TLS_RECORD_HANDSHAKE:
                self.plain_http += 1
                self.events.append((loop.time(), number, "plain HTTP"))
                await asyncio.sleep(self.rtt)  # the request's way there and the answer's way back
                await loop.sock_sendall(client, GO_PLAIN_HTTP_ANSWER)
                return
            reader = asyncio.StreamReader(limit=READ_LIMIT)
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), client, ssl=self.context, ssl_handshake_timeout=SETUP_TIMEOUT
            )
            client_writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            writers.append(client_writer)
            await asyncio.sleep(self.rtt)  # TLS 1.3's handshake: one more round trip before the request leaves
            self.events.append((loop.time(), number, "TLS up"))
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream, limit=READ_LIMIT)
            writers.append(upstream_writer)
            connection_up, connection_down = Bucket(self.per_connection), Bucket(self.per_connection)
            directions = [
                asyncio.ensure_future(self._direction(reader, upstream_writer, (connection_up, self.total_up), up=number)),
                asyncio.ensure_future(self._direction(upstream_reader, client_writer, (connection_down, self.total_down), up=0)),
            ]
            try:
                done, _pending = await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # a broken connection: both ends are closed below
            finally:
                for task in directions:
                    task.cancel()
                await asyncio.gather(*directions, return_exceptions=True)
        except (OSError, EOFError, ssl.SSLError, asyncio.TimeoutError):
            pass  # a client or the upstream went away: what a network does then
        finally:
            for writer in writers:
                writer.close()
            if not writers:
                client.close()

    @staticmethod
    async def _peek(client: socket.socket) -> bytes:
        """The first byte the client sent, left in the socket for the TLS handshake to read."""
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(client.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(client.fileno())
        return client.recv(1, socket.MSG_PEEK)

    async def _direction(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, buckets: tuple, up: int) -> None:
        """Bytes from `source` to `sink`: each chunk through the buckets, then rtt/2 on the way, in order; EOF travels too.

        `up`: the connection's number when the bytes go to the upstream (requests), else 0."""
        loop = asyncio.get_running_loop()
        delay = self.rtt / 2
        flight: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
        delivering = asyncio.ensure_future(self._deliver(flight, sink))
        try:
            while True:
                data = await source.read(CHUNK)
                now = loop.time()
                if not data:
                    await self._queue(flight, (now + delay, b""), delivering)
                    break
                passed = passed_at(len(data), now, buckets)
                if passed > now + SLACK:
                    await asyncio.sleep(passed - now)
                if up:
                    self.bytes_up += len(data)
                    if data[:1].isupper() and b" /" in data[:10]:  # a request line, as far as a chunk shows it
                        self.events.append((now, up, data.split(b"\r\n", 1)[0].decode("latin-1")))
                else:
                    self.bytes_down += len(data)
                # never sooner than rtt/2 after it was read; a bucket's credit only makes up for oversleeping
                if not await self._queue(flight, (max(passed, now) + delay, data), delivering):
                    break  # the other end is gone: nothing more can be delivered
            await delivering
        finally:
            delivering.cancel()

    @staticmethod
    async def _queue(flight: asyncio.Queue, item: tuple, delivering: asyncio.Future) -> bool:
        """Put `item` in flight, waiting for room; False if the delivery ended first."""
        if not flight.full():
            flight.put_nowait(item)
            return True
        put = asyncio.ensure_future(flight.put(item))
        await asyncio.wait([put, delivering], return_when=asyncio.FIRST_COMPLETED)
        if put.done():
            return True
        put.cancel()
        return False

    @staticmethod
    async def _deliver(flight: asyncio.Queue, sink: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await flight.get()
            wait = due - loop.time()
            if wait > SLACK:
                await asyncio.sleep(wait)
            if not data:
                sink.close()  # the end of one direction ends the connection (HTTP/1.1 needs no half-close)
                return
            sink.write(data)
            await sink.drain()


class _Blobs(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 server of /small (2 bytes) and /blob/<size> (zero bytes), for the self-check."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else a small answer waits on the client's delayed ACK

    def log_message(self, *args):
        pass

    def do_GET(self):
        size = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/blob/") else 2
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = bytes(min(size, 1024 * 1024))
        for start in range(0, size, len(block) or 1):
            self.wfile.write(block[: size - start])


def self_check(rtt: float = 0.05) -> bool:
    """Measure what the proxy adds against a direct server; print each figure with what the model expects."""
    import tempfile

    import requests

    MB = 1_000_000
    folder = Path(tempfile.mkdtemp(prefix="netem-check-"))
    tls = test_certificates(folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Blobs)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = server.server_address[:2]
    direct = f"http://127.0.0.1:{upstream[1]}"
    results = []

    def check(what: str, seconds: float, expected: float) -> None:
        good = abs(seconds - expected) <= 0.1 * expected + 0.02
        results.append(good)
        print(f"{'ok ' if good else 'BAD'} {what}: {seconds * 1000:.0f} ms, expected {expected * 1000:.0f} ms", flush=True)

    def session() -> requests.Session:
        made = requests.Session()
        made.trust_env, made.verify = False, tls.ca_file
        return made

    def timed_get(client: requests.Session, url: str) -> float:
        start = time.perf_counter()
        response = client.get(url, timeout=60)
        response.raise_for_status()
        assert len(response.content) == int(response.headers["Content-Length"])
        return time.perf_counter() - start

    def median_get(client: requests.Session, url: str) -> float:
        return statistics.median(timed_get(client, url) for _attempt in range(5))

    try:
        plain = session()
        timed_get(plain, f"{direct}/small")
        small_direct = median_get(plain, f"{direct}/small")

        proxy = ShapingProxy(upstream, rtt, 12.5 * MB, 25 * MB, tls.certfile, tls.keyfile).start()
        try:
            url = f"https://{proxy.host}"
            firsts = [timed_get(session(), f"{url}/small") for _attempt in range(3)]
            check("a request on a new connection (TCP, TLS 1.3, the request: 3 rtt)", statistics.median(firsts), 3 * rtt + small_direct)
            kept = session()
            timed_get(kept, f"{url}/small")
            check("a request on a kept-alive connection (direct + 1 rtt)", median_get(kept, f"{url}/small"), small_direct + rtt)
            check("10 MB on a kept-alive connection, 12.5 MB/s a connection (0.8 s + rtt)", timed_get(kept, f"{url}/blob/{10 * MB}"), 0.8 + rtt)
            clients = [session() for _attempt in range(4)]
            for client in clients:
                timed_get(client, f"{url}/small")
            start = time.perf_counter()
            threads = [threading.Thread(target=timed_get, args=(client, f"{url}/blob/{10 * MB}")) for client in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            check("4 x 10 MB at once, 25 MB/s in total (1.6 s + rtt)", time.perf_counter() - start, 1.6 + rtt)
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
                raw.sendall(b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = raw.recv(1024)
            check("plain HTTP to the TLS port: 400 after 2 rtt (Go's answer)", time.perf_counter() - started, 2 * rtt)
            results.append(answer.startswith(b"HTTP/1.0 400"))
        finally:
            proxy.stop()

        proxy = ShapingProxy(upstream, 0.0, None, None, tls.certfile, tls.keyfile).start()
        try:
            command = ["curl", "-sf", "-o", "/dev/null", "-w", "%{time_total}", "--cacert", tls.ca_file, f"https://{proxy.host}/blob/{200 * MB}"]
            seconds = float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            print(f"    the proxy's own ceiling, no limits, one connection, curl: {200 / seconds:.0f} MB/s (TLS; the upstream in this process)", flush=True)
        finally:
            proxy.stop()
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)
    return all(results)


if __name__ == "__main__":
    sys.exit(0 if self_check() else 1)
