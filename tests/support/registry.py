"""The real distribution registry (Debian docker-registry) on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from typing import Optional

import requests
import yaml

# The one account the authenticating test registries know.
USER, PASSWORD = "deployer", "s3cret-Pa55word"

_ACCESS_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) ')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceExited(RuntimeError):
    """A service the tests started has exited: waiting longer for it is pointless."""


def wait_for(check, timeout: float = 20.0, what: str = "service") -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ServiceExited:
            raise
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready in {timeout} s: {last}")


def stop_process(process, grace: float = 30) -> None:
    """Terminate a service the tests started, killing it if it will not stop."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RegistryServer:
    """`docker-registry serve` with its own storage; the access log is kept for assertions."""

    def __init__(self, workdir: str, auth: Optional[dict] = None, tls: Optional[tuple] = None, proxy: Optional[dict] = None, storage: Optional[str] = None):
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        os.makedirs(workdir, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}, "fields": {"service": "registry"}},
            "storage": {"filesystem": {"rootdirectory": storage or os.path.join(workdir, "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "dockyard-tests"},
        }
        if tls:
            config["http"]["tls"] = {"certificate": tls[0], "key": tls[1]}
        if auth:
            config["auth"] = auth
        if proxy:
            config["proxy"] = proxy
        self.config_path = os.path.join(workdir, "config.yml")
        with open(self.config_path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)
        self.access_log = os.path.join(workdir, "access.log")
        self.error_log = os.path.join(workdir, "registry.log")
        self.process = None

    def start(self, ca_path: Optional[str] = None) -> RegistryServer:
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        with open(self.access_log, "ab") as out, open(self.error_log, "ab") as err:
            self.process = subprocess.Popen([binary, "serve", self.config_path], stdout=out, stderr=err)
        verify = ca_path or False
        wait_for(lambda: requests.get(self.url + "/v2/", timeout=2, verify=verify).status_code in (200, 401), what=f"registry at {self.url}")
        return self

    def stop(self) -> None:
        stop_process(self.process, 10)

    def requests_seen(self) -> list:
        """(method, path, status) for every request in the access log so far."""
        with open(self.access_log, encoding="utf-8", errors="replace") as handle:
            return [(m["method"], m["path"], int(m["status"])) for m in map(_ACCESS_RE.search, handle) if m]

    def mark(self) -> int:
        return len(self.requests_seen())

    def requests_since(self, mark: int) -> list:
        return self.requests_seen()[mark:]

    def image_requests_since(self, mark: int) -> list:
        """requests_since without the version checks (`/v2/`), which concern no image."""
        return [entry for entry in self.requests_since(mark) if entry[1] != "/v2/"]
