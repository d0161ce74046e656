"""Real engines for the tests: Docker Engine (dockerd) and Podman's API service, each with its
own directories and socket, reached over loopback only."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from typing import Optional

from support.registry import stop_process, wait_for


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Engine:
    """What the tests ask an engine directly, independent of the collection's own client."""

    socket_path: str
    process = None

    def stop(self) -> None:
        stop_process(self.process)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def api(self, method: str, path: str, body: Optional[dict] = None):
        connection = UnixHTTPConnection(self.socket_path)
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data and data[:1] in (b"{", b"[") else data)
        finally:
            connection.close()

    def ping(self) -> bool:
        return self.api("GET", "/_ping")[0] == 200

    def inspect(self, name: str):
        status, data = self.api("GET", f"/images/{name}/json")
        return data if status == 200 else None

    def remove_all_images(self) -> None:
        for container in self.api("GET", "/containers/json?all=1")[1]:
            self.api("DELETE", f"/containers/{container['Id']}?force=1")
        for image in self.api("GET", "/images/json")[1]:
            self.api("DELETE", f"/images/{image['Id']}?force=1")

    def create_container(self, image: str, name: str) -> str:
        status, data = self.api("POST", f"/containers/create?name={name}", {"Image": image, "Cmd": ["/bin/sh"]})
        assert status == 201, data
        return data["Id"]


class DockerEngine(Engine):
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.socket_path = os.path.join(workdir, "docker.sock")
        self.process = None

    def start(self) -> DockerEngine:
        os.makedirs(self.workdir, exist_ok=True)
        command = [
            shutil.which("dockerd") or "/usr/sbin/dockerd",
            "--data-root", os.path.join(self.workdir, "data"),
            "--exec-root", os.path.join(self.workdir, "exec"),
            "--pidfile", os.path.join(self.workdir, "docker.pid"),
            "-H", self.docker_host,
            "--iptables=false", "--ip6tables=false", "--bridge=none",
        ]  # fmt: skip
        with open(os.path.join(self.workdir, "dockerd.log"), "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for(lambda: os.path.exists(self.socket_path) and self.ping(), timeout=60, what="dockerd")
        return self


class PodmanService(Engine):
    """`podman system service` with its own root, vfs storage, and the test registries as insecure."""

    def __init__(self, workdir: str, insecure_registries: list):
        self.workdir = workdir
        self.socket_path = os.path.join(workdir, "podman.sock")
        self.insecure_registries = insecure_registries
        self.process = None

    def start(self) -> PodmanService:
        os.makedirs(self.workdir, exist_ok=True)
        conf = os.path.join(self.workdir, "registries.conf")
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write("unqualified-search-registries = []\n")
            for host in self.insecure_registries:
                handle.write(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
        env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=conf)
        command = [
            "podman",
            "--root", os.path.join(self.workdir, "root"),
            "--runroot", os.path.join(self.workdir, "run"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "system", "service", "--time=0", self.docker_host,
        ]  # fmt: skip
        with open(os.path.join(self.workdir, "podman.log"), "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        wait_for(lambda: os.path.exists(self.socket_path) and self.ping(), timeout=60, what="podman system service")
        return self
