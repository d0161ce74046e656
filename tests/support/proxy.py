"""A small fault-injecting HTTP proxy in front of the real registry.

Faults the registry will not produce on demand: 429 with Retry-After, connections reset part-way
through a blob, flipped bytes. Each rule fires a given number of times, then traffic passes.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from support.registry import free_port


@dataclass
class Fault:
    path: str  # a regular expression on the request path
    kind: str  # "status", "reset", "corrupt", "redirect" (to headers["Location"]), "headers" (added to the answer), "delay"
    times: int = 1
    status: int = 429
    headers: dict = None
    after_bytes: int = 0
    method: str = "GET"
    seconds: float = 0.0  # "delay": how long the request waits before it goes on to the registry


class FaultProxy:
    def __init__(self, upstream: str, bind: str = "127.0.0.1"):
        self.upstream = urlsplit(upstream)
        self.port = free_port()
        self.host = f"{bind}:{self.port}"
        self.url = f"http://{self.host}"
        self.faults = []
        self.log = []  # (method, path, range header, status sent)
        self.authorization = []  # (path, Authorization header or None) for every request
        self.in_flight = self.most_in_flight = 0  # requests being answered now, and the most there ever were at once
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                try:
                    proxy._handle(self)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self.server = ThreadingHTTPServer((bind, self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def _take(self, method: str, path: str):
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and re.search(fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, handler, status: int) -> None:
        with self._lock:
            self.log.append((handler.command, handler.path, handler.headers.get("Range"), status))
            self.authorization.append((handler.path, handler.headers.get("Authorization")))

    def _handle(self, handler) -> None:
        fault = self._take(handler.command, handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "redirect":
            self._record(handler, 307)
            handler.send_response(307)
            handler.send_header("Location", fault.headers["Location"] + handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if fault is not None and fault.kind == "status":
            self._record(handler, fault.status)
            payload = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}' if fault.status == 429 else b"{}"
            handler.send_response(fault.status)
            for key, value in (fault.headers or {}).items():
                handler.send_header(key, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        headers = {}  # a header sent more than once (dockerd sends an Accept for each media type) goes on as one list
        for key, value in handler.headers.items():
            if key.lower() not in ("host", "connection"):
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        headers["Host"] = self.upstream.netloc
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        connection.request(handler.command, handler.path, body=body, headers=headers)
        response = connection.getresponse()
        self._record(handler, response.status)
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() in ("connection", "transfer-encoding"):
                continue
            if key.lower() == "location" and value.startswith(f"{self.upstream.scheme}://{self.upstream.netloc}"):
                value = self.url + value[len(f"{self.upstream.scheme}://{self.upstream.netloc}") :]
            handler.send_header(key, value)
        if fault is not None and fault.kind == "headers":
            for key, value in fault.headers.items():
                handler.send_header(key, value)
        if response.getheader("Content-Length") is None and handler.command != "HEAD":
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if handler.command == "HEAD":
            connection.close()
            return
        sent = 0
        while True:
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            if fault is not None and fault.kind == "corrupt" and sent == 0:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            if fault is not None and fault.kind == "reset" and sent + len(chunk) >= fault.after_bytes:
                handler.wfile.write(chunk[: max(fault.after_bytes - sent, 0)])
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)
                handler.close_connection = True
                connection.close()
                return
            handler.wfile.write(chunk)
            sent += len(chunk)
        connection.close()

    def requests_for(self, pattern: str) -> list:
        with self._lock:
            return [entry for entry in self.log if re.search(pattern, entry[1])]
