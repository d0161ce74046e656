"""Real engines for the tests: Docker Engine (dockerd) and Podman's API service, each with its
own directories and socket, reached over loopback only."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Optional

from support.registry import ServiceExited, stop_process, wait_for


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

    def stop(self) -> None:
        super().stop()
        # what dockerd mounted under its folders and left (a host-network container's namespace) goes too,
        # or the folder could never be removed
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted((point for point in points if point.startswith(self.workdir + os.sep)), reverse=True):
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


class PodmanService(Engine):
    """`podman system service` with its own root, vfs storage, and the test registries as insecure."""

    def __init__(self, workdir: str, insecure_registries: list):
        self.workdir = workdir
        self.socket_path = os.path.join(workdir, "podman.sock")
        self.insecure_registries = insecure_registries
        self.process = None
        self.runroot = None

    def start(self) -> PodmanService:
        os.makedirs(self.workdir, exist_ok=True)
        conf = os.path.join(self.workdir, "registries.conf")
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write("unqualified-search-registries = []\n")
            for host in self.insecure_registries:
                handle.write(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
        env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=conf)
        self.runroot = tempfile.mkdtemp(prefix="dy-podman-", dir="/tmp")  # podman refuses a runroot longer than 50 characters
        command = [
            "podman",
            "--root", os.path.join(self.workdir, "root"),
            "--runroot", self.runroot,
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "system", "service", "--time=0", self.docker_host,
        ]  # fmt: skip
        with open(os.path.join(self.workdir, "podman.log"), "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            wait_for(lambda: self._running() and os.path.exists(self.socket_path) and self.ping(), timeout=60, what="podman system service")
        except Exception:
            self.stop()
            raise
        return self

    def _running(self) -> bool:
        if self.process.poll() is not None:
            with open(os.path.join(self.workdir, "podman.log"), encoding="utf-8", errors="replace") as log:
                raise ServiceExited(f"podman system service exited: {log.read()[-2000:]}")
        return True

    def stop(self) -> None:
        super().stop()
        if self.runroot:
            shutil.rmtree(self.runroot, ignore_errors=True)


class ContainerdService:
    """Debian's containerd with its own root, state, socket and config, its CRI plugin on and on loopback only."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.socket_path = os.path.join(workdir, "containerd.sock")
        self.config_path = os.path.join(workdir, "config.toml")
        self.process = None

    def start(self) -> ContainerdService:
        for folder in ("root", "state", "cni/bin", "cni/conf"):
            os.makedirs(os.path.join(self.workdir, folder), exist_ok=True)
        with open(self.config_path, "w", encoding="utf-8") as handle:
            handle.write(
                "version = 2\n"
                f'root = "{self.workdir}/root"\n'
                f'state = "{self.workdir}/state"\n'
                "[grpc]\n"
                f'  address = "{self.socket_path}"\n'
                '[plugins."io.containerd.grpc.v1.cri"]\n'
                "  disable_tcp_service = true\n"
                '  stream_server_address = "127.0.0.1"\n'
                '  stream_server_port = "0"\n'
                '  [plugins."io.containerd.grpc.v1.cri".cni]\n'
                f'    bin_dir = "{self.workdir}/cni/bin"\n'
                f'    conf_dir = "{self.workdir}/cni/conf"\n'
            )
        binary = shutil.which("containerd") or "/usr/bin/containerd"
        with open(os.path.join(self.workdir, "containerd.log"), "ab") as log:
            self.process = subprocess.Popen([binary, "--config", self.config_path], stdout=log, stderr=log)
        wait_for(lambda: os.path.exists(self.socket_path) and self.ctr("version").returncode == 0, timeout=60, what="containerd")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def ctr(self, *args: str, namespace: str = "k8s.io", stdin: Optional[bytes] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """`ctr` against this containerd; the completed process, with text output."""
        command = [shutil.which("ctr") or "/usr/bin/ctr", "--address", self.socket_path, "--namespace", namespace, *args]
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))

    def ok(self, *args: str, **kwargs) -> str:
        done = self.ctr(*args, **kwargs)
        assert done.returncode == 0, f"ctr {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    def image_names(self, namespace: str = "k8s.io") -> dict:
        """name: target digest of every image of the namespace."""
        rows = [line.split() for line in self.ok("images", "ls", namespace=namespace).splitlines()[1:]]
        return {row[0]: row[2] for row in rows if len(row) >= 3}

    def remove_all(self, namespace: str = "k8s.io") -> None:
        """Every task, container and image of the namespace, then wait for the garbage collector."""
        for task in self.ok("tasks", "ls", "--quiet", namespace=namespace).split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, namespace=namespace)
            self.ctr("tasks", "delete", "--force", task, namespace=namespace)
        containers = self.ok("containers", "ls", "--quiet", namespace=namespace).split()
        if containers:
            self.ok("containers", "rm", *containers, namespace=namespace)
        names = list(self.image_names(namespace))
        if names:
            self.ok("images", "rm", "--sync", *names, namespace=namespace)
