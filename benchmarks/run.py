"""Side-by-side timings against peers measured in the same run, on the same local registry and images.

    hack/bench.sh [--runs N] [--only NAME ...] [--results PATH]   # sets up, then runs this file with .venv/bin/python

Starts its own registry (and a Docker Engine and a containerd when a comparison needs them), builds a
corpus of images that share base layers, runs each comparison several times alternating the sides, and
prints medians (with the fastest and slowest run) and ratios; the table also goes to
benchmarks/RESULTS.md with a description of the machine when every comparison ran (with --only, to
--results PATH if given, else only printed). Nothing here is asserted: a regression shows
as a ratio.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from deliver import deliver  # noqa: E402  (benchmarks/deliver.py, beside this file)
from fleet import fleet  # noqa: E402  (benchmarks/fleet.py)
from netem import ShapingProxy, TLSFiles, test_certificates  # noqa: E402  (benchmarks/netem.py)

from support.ansible import ansible_env, ensure_collection_path  # noqa: E402
from support.engines import ContainerdService, DockerEngine  # noqa: E402
from support.images import OCI_MANIFEST, Image, Index, Pusher, random_layer  # noqa: E402
from support.process import module_command, run_module_process  # noqa: E402
from support.registry import RegistryServer  # noqa: E402

sys.path.insert(0, ensure_collection_path())

MB = 1_000_000
STEPS = ("cold_oci", "cold_oci_large", "noop", "cold_engine", "cold_containerd", "noop_containerd", "memory", "fleet", "report", "deliver", "net50", "net100")
STEPS += ("net50_docker", "net100_docker", "net50_registry", "net100_registry")  # through the same proxy as net50, net100
NETWORKS = {"net50": (0.050, 12.5 * MB), "net100": (0.100, 125 * MB)}  # round-trip time (s); bytes a second, per connection and in total
CRI_NAMESPACE = "k8s.io"
HISTORY = "## Changes and what they bought\n"  # kept across runs: written by hand below the table
_ACCESS_BYTES = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<bytes>\d+)')


class Corpus:
    """Five images, about 150 MB of unique compressed layers (times `scale`), sharing a base and a runtime layer."""

    def __init__(self, registry: RegistryServer, scale: int = 1, prefix: str = "bench"):
        base, runtime = random_layer(40 * MB * scale, f"{prefix}-base"), random_layer(20 * MB * scale, f"{prefix}-runtime")
        self.images = {}
        for n in range(5):
            layers = [base] + ([runtime] if n < 3 else []) + [random_layer(18 * MB * scale, f"{prefix}-app-{n}")]
            self.images[f"{prefix}/app{n}:1"] = Image(layers)
        pusher = Pusher(registry.url)
        for name, image in self.images.items():
            repo, tag = name.split(":")
            pusher.image(repo, tag, image)
        self.names = [f"{registry.host}/{name}" for name in self.images]
        self.blobs = {layer.digest: layer.size for image in self.images.values() for layer in image.layers}
        self.blobs.update({image.id: len(image.config) for image in self.images.values()})
        self.repos = {}
        for name, image in self.images.items():
            for digest in [layer.digest for layer in image.layers] + [image.id]:
                self.repos.setdefault(digest, name.split(":")[0])

    @property
    def unique_bytes(self) -> int:
        return sum(self.blobs.values())


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run(command, env=None, check=True):
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def playbook(tmp: Path, name: str, tasks: list) -> str:
    path = tmp / f"{name}.yml"
    path.write_text(json.dumps([{"name": name, "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]))
    return str(path)


def ansible_playbook(path: str) -> None:
    env = ansible_env({"ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", path], env=env)


def registry_gets(registry: RegistryServer, mark: int) -> int:
    return sum(1 for method, path, status in registry.requests_since(mark) if method == "GET")


def registry_blob_bytes(registry: RegistryServer, mark_line: int) -> int:
    with open(registry.access_log, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()[mark_line:]
    return sum(int(m["bytes"]) for m in map(_ACCESS_BYTES.search, lines) if m and m["method"] == "GET" and "/blobs/" in m["path"])


def access_lines(registry: RegistryServer) -> int:
    with open(registry.access_log, encoding="utf-8", errors="replace") as handle:
        return sum(1 for _line in handle)


def timed_blob_bytes(registry: RegistryServer, action) -> tuple:
    """(the seconds `action` took, the blob bytes `registry` served meanwhile)."""
    start_line = access_lines(registry)
    seconds = timed(action)
    return seconds, registry_blob_bytes(registry, start_line)


class Bench:
    def __init__(self, runs: int, work: Path):
        self.runs, self.work = runs, work
        self.rows = []  # (comparison, ours label, ours seconds of each run, peer label, peer seconds of each run, target, note)

    def compare(self, title: str, target: str, sides: list, note: str = "", pairs: Optional[list] = None) -> None:
        """Run each side `runs` times, alternating, each after its own `prepare`; record every run's time.

        Dirty pages are written back before each run, so that no side pays for the previous one's
        writes (a side that fsyncs would otherwise wait behind a side that did not).
        A row for each (ours, peer) label pair of `pairs`; by default the first side against each other one.
        """
        times = {side[0]: [] for side in sides}
        for _round in range(self.runs):
            for label, prepare, action in sides:
                prepare()
                os.sync()
                times[label].append(timed(action))
        for ours, label in pairs or [(sides[0][0], other) for other in list(times)[1:]]:
            self.rows.append((title, ours, times[ours], label, times[label], target, note))
            print(f"{title}: {ours} {spread(times[ours])} vs {label} {spread(times[label])} = {ratio(times[ours], times[label])}x", flush=True)

    def record(self, title: str, value: str, target: str, note: str = "") -> None:
        self.rows.append((title, value, None, "", None, target, note))
        print(f"{title}: {value}", flush=True)


def spread(seconds: list) -> str:
    """The median, and the fastest and slowest run: on a shared machine one run says little."""
    return f"{statistics.median(seconds):.2f} s ({min(seconds):.2f}-{max(seconds):.2f})"


def ratio(ours: list, peer: list) -> str:
    return f"{statistics.median(ours) / statistics.median(peer):.2f}"


class ColdPulls:
    """The three ways a corpus is pulled cold into a folder of its own: image_pull as a module process,
    skopeo copy image by image, and the raw limit (every unique blob fetched with parallel curl)."""

    def __init__(self, bench: Bench, registry: RegistryServer, corpus: Corpus, name: str):
        self.corpus = corpus
        self.store, self.skopeo_store, self.raw = (bench.work / f"{name}-{side}" for side in ("ours", "skopeo", "raw"))
        self.command, self.env = module_command("image_pull", {"name": corpus.names, "store": "oci", "store_path": str(self.store)}, bench.work)
        self.blobs = [(f"{registry.url}/v2/{corpus.repos[digest]}/blobs/{digest}", digest, size) for digest, size in corpus.blobs.items()]

    @staticmethod
    def reset(path: Path):
        return lambda: shutil.rmtree(path, ignore_errors=True)

    def ours(self) -> None:
        """The module as its own process, as skopeo is timed as its own (no launcher in between)."""
        assert json.loads(run(self.command, env=self.env).stdout)["changed"] is True

    def skopeo(self) -> None:
        for name in self.corpus.names:
            run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{name}", f"oci:{self.skopeo_store}:{name}"])

    def curl_all(self) -> None:
        self.raw.mkdir(parents=True, exist_ok=True)
        command = ["xargs", "-P", "8", "-n", "1", "curl", "-sfO", "--output-dir", str(self.raw)]
        subprocess.run(command, input="\n".join(url for url, _digest, _size in self.blobs), text=True, check=True)

    def sides(self) -> list:
        return [
            ("image_pull", self.reset(self.store), self.ours),
            ("skopeo copy", self.reset(self.skopeo_store), self.skopeo),
            ("raw parallel curl", self.reset(self.raw), self.curl_all),
        ]

    @property
    def note(self) -> str:
        return f"{len(self.corpus.names)} images, {self.corpus.unique_bytes / MB:.0f} MB unique"


def cold_oci(bench: Bench, registry: RegistryServer, corpus: Corpus) -> None:
    pulls = ColdPulls(bench, registry, corpus, "cold")
    bench.compare("cold pull into the OCI store", "<= 0.5x skopeo, <= 1.5x raw", pulls.sides(), pulls.note)

    def start_up():
        """What any Ansible module on requests pays before its first request: the interpreter and the imports."""
        run([sys.executable, "-c", "import gc; gc.disable(); import ansible.module_utils.basic, requests"], env=pulls.env)

    def floor():
        """Start-up, then every blob fetched, verified and written durably, and nothing else."""
        floor_py = str(REPO / "benchmarks" / "floor.py")
        subprocess.run([sys.executable, floor_py, str(pulls.raw)], input=json.dumps(pulls.blobs), text=True, env=pulls.env, check=True)

    ours, _skopeo, curl = pulls.sides()
    bench.compare(
        "cold pull against what any Ansible module on requests must do",
        "",
        [
            ours,
            ("start-up: python importing ansible and requests", pulls.reset(pulls.raw), start_up),
            ("floor: start-up, then each blob fetched, hashed and fsynced (benchmarks/floor.py)", pulls.reset(pulls.raw), floor),
        ],
    )
    cpu_accounting(bench, registry, [ours, curl])


def cold_oci_large(bench: Bench, registry: RegistryServer) -> None:
    """The same five images with layers four times as large: what the start-up weighs against the bytes."""
    pulls = ColdPulls(bench, registry, Corpus(registry, scale=4, prefix="bench-large"), "large")
    bench.compare("cold pull into the OCI store, layers 4x as large", "", pulls.sides(), pulls.note)


def cpu_accounting(bench: Bench, registry: RegistryServer, sides: list) -> None:
    """CPU seconds each side and the registry spend on one cold pull: on a small machine they share the cores."""
    ticks = os.sysconf("SC_CLK_TCK")

    def registry_cpu() -> float:
        with open(f"/proc/{registry.process.pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    for label, prepare, action in sides:
        prepare()
        os.sync()
        children, served = resource.getrusage(resource.RUSAGE_CHILDREN), registry_cpu()
        action()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        bench.record(f"CPU seconds of one cold pull: {label}", f"{own:.2f} s, the registry {registry_cpu() - served:.2f} s", "")


def noop_reruns(bench: Bench, registry: RegistryServer, corpus: Corpus, engine: DockerEngine) -> None:
    store = bench.work / "oci-noop"
    ours_docker = playbook(
        bench.work,
        "ours-noop-docker",
        [{"dockyard.images.image_pull": {"name": corpus.names, "policy": "always", "store": "docker", "docker_host": engine.docker_host}}],
    )
    ours_oci = playbook(
        bench.work, "ours-noop-oci", [{"dockyard.images.image_pull": {"name": corpus.names, "policy": "always", "store": "oci", "store_path": str(store)}}]
    )
    peer = playbook(
        bench.work,
        "community-docker-noop",
        [
            {
                "community.docker.docker_image_pull": {"name": "{{ item }}", "pull": "always", "docker_host": engine.docker_host},
                "loop": corpus.names,
            }
        ],
    )
    ansible_playbook(ours_docker)
    ansible_playbook(ours_oci)

    def nothing():
        """The stores are already warm: a no-op run needs no preparing."""

    bench.compare(
        "no-op re-run on Docker Engine",
        "<= 0.5x community.docker, 0 GETs",
        [("image_pull (docker)", nothing, lambda: ansible_playbook(ours_docker)), ("docker_image_pull loop", nothing, lambda: ansible_playbook(peer))],
    )
    ours_marks = registry.mark()
    ansible_playbook(ours_docker)
    ansible_playbook(ours_oci)
    bench.record("GET requests by a no-op image_pull (docker and OCI)", str(registry_gets(registry, ours_marks)), "0")
    bench.compare(
        "no-op re-run, OCI store",
        "<= 0.5x community.docker",
        [("image_pull (oci)", nothing, lambda: ansible_playbook(ours_oci)), ("docker_image_pull loop", nothing, lambda: ansible_playbook(peer))],
    )


def cold_engine(bench: Bench, corpus: Corpus, engine: DockerEngine) -> None:
    ours = playbook(
        bench.work, "ours-cold-docker", [{"dockyard.images.image_pull": {"name": corpus.names, "store": "docker", "docker_host": engine.docker_host}}]
    )
    peer = playbook(
        bench.work,
        "community-docker-cold",
        [{"community.docker.docker_image_pull": {"name": "{{ item }}", "pull": "always", "docker_host": engine.docker_host}, "loop": corpus.names}],
    )
    bench.compare(
        "cold pull into Docker Engine",
        "<= 0.8x community.docker",
        [
            ("image_pull (docker)", engine.remove_all_images, lambda: ansible_playbook(ours)),
            ("docker_image_pull loop", engine.remove_all_images, lambda: ansible_playbook(peer)),
        ],
    )


class ContainerdPulls:
    """The corpus pulled into containerd's k8s.io namespace: image_pull as a module process against
    `ctr images pull` of each reference, both on the same private containerd and loopback registry."""

    def __init__(self, bench: Bench, corpus: Corpus, containerd: ContainerdService, policy: str = "missing"):
        self.corpus, self.containerd = corpus, containerd
        args = {"name": corpus.names, "policy": policy, "store": "containerd"}
        args.update(containerd_address=containerd.socket_path, containerd_namespace=CRI_NAMESPACE)
        self.command, self.env = module_command("image_pull", args, bench.work)
        self.ctr = [shutil.which("ctr") or "ctr", "--address", containerd.socket_path, "--namespace", CRI_NAMESPACE]

    def empty(self) -> None:
        """Every image gone and containerd's garbage collector done: no blob and no snapshot left to reuse."""
        deadline = time.monotonic() + 60
        while True:
            self.containerd.remove_all(CRI_NAMESPACE)  # the CRI plugin may name an image again meanwhile
            left = run([*self.ctr, "content", "ls", "--quiet"]).stdout.split() + run([*self.ctr, "snapshots", "ls"]).stdout.splitlines()[1:]
            if not left and not self.containerd.image_names(CRI_NAMESPACE):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd still holds {left[:5]} after removing every image")
            time.sleep(0.1)

    def ours(self, changed: bool) -> None:
        assert json.loads(run(self.command, env=self.env).stdout)["changed"] is changed

    def ctr_pulls(self) -> None:
        for name in self.corpus.names:
            run([*self.ctr, "images", "pull", "--plain-http", name])


def cold_containerd(bench: Bench, corpus: Corpus, containerd: ContainerdService) -> None:
    pulls = ContainerdPulls(bench, corpus, containerd)
    bench.compare(
        "cold pull into containerd (k8s.io)",
        "<= 1.0x ctr",
        [("image_pull (containerd)", pulls.empty, lambda: pulls.ours(True)), ("ctr images pull, image by image", pulls.empty, pulls.ctr_pulls)],
        f"{len(corpus.names)} images, {corpus.unique_bytes / MB:.0f} MB unique, unpacked",
    )


def noop_containerd(bench: Bench, registry: RegistryServer, corpus: Corpus, containerd: ContainerdService) -> None:
    """Every image present: image_pull under its default `policy: missing` asks the registry nothing, and with
    `policy: always` asks whether each tag moved; ctr asks the registry again."""
    for policy, note in (("missing", "the default policy: no registry request"), ("always", "a HEAD per tag")):
        pulls, ours = ContainerdPulls(bench, corpus, containerd, policy=policy), f"image_pull (containerd), policy {policy}"
        pulls.empty()
        pulls.ours(True)

        def nothing():
            """The namespace is already warm: a no-op run needs no preparing."""

        bench.compare(
            f"no-op re-run on containerd (k8s.io), policy {policy}",
            "<= 0.3x ctr, 0 GETs",
            [(ours, nothing, functools.partial(pulls.ours, False)), ("ctr images pull, image by image", nothing, pulls.ctr_pulls)],
            note,
        )
        for label, action, target in ((ours, functools.partial(pulls.ours, False), "0"), ("ctr images pull", pulls.ctr_pulls, "")):
            mark = registry.mark()
            action()
            bench.record(f"GET requests by a no-op re-run on containerd: {label}", str(registry_gets(registry, mark)), target)


class ProxyCounts:
    """What each side sends through a ShapingProxy in its last timed run: the requests the registry behind it
    saw, the connections the proxy accepted, and the proxy's events (kept for `waits`)."""

    registry: RegistryServer
    proxy: ShapingProxy

    def __init__(self, registry: RegistryServer, proxy: ShapingProxy):
        self.registry, self.proxy = registry, proxy
        self.counts = {}  # label: what the last timed run of that side sent through the proxy
        self.timelines = {}  # label: (when it started, the proxy's events meanwhile)

    def counted(self, label: str, action, also: Optional[RegistryServer] = None):
        """`action`, noting the connections it opened and the requests the registry saw from it
        (and, if given, the requests `also`, a registry not behind the proxy, saw)."""

        def counted_action() -> None:
            connections, plain, mark = self.proxy.connections, self.proxy.plain_http, self.registry.mark()
            also_mark, first_event, started = also.mark() if also else 0, len(self.proxy.events), time.monotonic()
            action()
            methods = [method for method, _path, _status in self.registry.requests_since(mark)]
            requests = ", ".join(f"{methods.count(method)} {method}" for method in sorted(set(methods))) or "no request"
            plain_note = f" ({self.proxy.plain_http - plain} answered 400: plain HTTP)" if self.proxy.plain_http > plain else ""
            self.counts[label] = f"{requests} on {self.proxy.connections - connections} connections{plain_note}"
            if also:
                methods = [method for method, _path, _status in also.requests_since(also_mark)]
                self.counts[label] += ", then " + ", ".join(f"{methods.count(method)} {method}" for method in sorted(set(methods))) + " at the destination"
            self.timelines[label] = (started, list(self.proxy.events[first_event:]))

        return counted_action

    def record_counts(self, bench: Bench, what: str) -> None:
        bench.record(f"requests and connections of one {what}", "; ".join(f"{label}: {count}" for label, count in self.counts.items()), "")
        self.counts = {}

    def record_waits(self, bench: Bench, label: str, what: str) -> None:
        """Where `label`'s last timed run waited on round trips, as the proxy's event log shows it."""
        started, events = self.timelines[label]
        value, note = round_trip_waits(events, started, self.proxy.rtt)
        bench.record(f"where {label} waits on round trips, {what}", value, "", note)


def _event_kind(what: str) -> str:
    """A proxy event named by its kind: connect, TLS up, or the request's method and what it asks for."""
    if what in ("accepted", "TLS up", "plain HTTP"):
        return {"accepted": "connect"}.get(what, what)
    method, _space, rest = what.partition(" ")
    path = rest.split(" ", 1)[0].split("?", 1)[0]
    for part, name in (("/manifests/", "manifest"), ("/blobs/uploads", "upload"), ("/blobs/", "blob"), ("/tags/list", "tags")):
        if part in path:
            return f"{method} {name}"
    return f"{method} {path}" if path in ("/v2/", "/v2") else f"{method} other"


def round_trip_waits(events: list, started: float, rtt: float) -> tuple:
    """The proxy's events of one run grouped into waves: a wave starts when nothing happened for rtt/2,
    so each wave after the first followed a wait of at least half a round trip (a reply, or bytes at
    the bandwidth). Returns (how many waves over how long, the waves: +ms from the run's start: kinds)."""
    if not events:
        return "no traffic", ""
    events = sorted(events)  # a request is logged when read, which may be before an event logged after it
    waves = []  # [offset from the start, {kind: count}, in order]
    last = None
    for when, _number, what in events:
        if last is None or when - last >= rtt / 2:
            waves.append([when - started, {}])
        kinds = waves[-1][1]
        kind = _event_kind(what)
        kinds[kind] = kinds.get(kind, 0) + 1
        last = when
    first, span = events[0][0] - started, events[-1][0] - events[0][0]
    blob = next((when for when, _n, what in events if _event_kind(what).endswith(" blob")), None)

    def shown(wave):
        return f"+{wave[0] * 1000:.0f} " + ", ".join(f"{kind}{' x' + str(count) if count > 1 else ''}" for kind, count in wave[1].items())

    listed = [shown(wave) for wave in waves]
    if len(listed) > 16:
        listed = [*listed[:12], f"({len(listed) - 14} more)", *listed[-2:]]
    before_blob = f"; the first blob GET {(blob - events[0][0]) / rtt:.1f} RTT after the first connect" if blob is not None else ""
    connecting = sum(1 for wave in waves if "connect" in wave[1])
    value = f"{len(waves)} waves over {span:.2f} s = {span / rtt:.0f} RTT; {connecting} of them open a connection"
    note = f"start-up before the first connect {first * 1000:.0f} ms{before_blob}; waves (ms from the start): " + "; ".join(listed)
    return value, note


class ShapedPulls(ProxyCounts):
    """The corpus pulled through a ShapingProxy (benchmarks/netem.py): every side names the images by the
    proxy's host, trusts the test CA, and opens its own connections through the same proxy."""

    def __init__(self, bench: Bench, registry: RegistryServer, corpus: Corpus, proxy: ShapingProxy, tls: TLSFiles, containerd: ContainerdService, step: str):
        super().__init__(registry, proxy)
        self.tls = tls
        self.names = [f"{proxy.host}/{name}" for name in corpus.images]
        self.store, self.skopeo_store, self.raw = (bench.work / f"{step}-{side}" for side in ("ours", "skopeo", "raw"))
        self.blobs = [(f"https://{proxy.host}/v2/{corpus.repos[digest]}/blobs/{digest}", digest, size) for digest, size in corpus.blobs.items()]
        oci = {"name": self.names, "ca_path": tls.ca_file, "store": "oci", "store_path": str(self.store)}
        in_containerd = {"name": self.names, "ca_path": tls.ca_file, "store": "containerd"}
        in_containerd.update(containerd_address=containerd.socket_path, containerd_namespace=CRI_NAMESPACE)
        self.commands = {}
        for kind, args in (("oci", oci), ("oci-always", dict(oci, policy="always")), ("containerd", in_containerd)):
            folder = bench.work / f"{step}-{kind}"  # module_command names the arguments' file after the module
            folder.mkdir(parents=True, exist_ok=True)
            self.commands[kind] = module_command("image_pull", args, folder)
        self.containerd = ContainerdPulls(bench, corpus, containerd)  # for its empty() and its ctr
        # ctr speaks plain HTTP to a loopback host unless a hosts.toml names its server https (it then trusts its ca)
        self.hosts_dir = bench.work / f"{step}-hosts"
        (self.hosts_dir / proxy.host).mkdir(parents=True, exist_ok=True)
        server = f"https://{proxy.host}"  # ctr 1.6 wants a [host] table beside the server
        toml = f'server = "{server}"\nca = "{tls.ca_file}"\n[host."{server}"]\n  capabilities = ["pull", "resolve"]\n  ca = "{tls.ca_file}"\n'
        (self.hosts_dir / proxy.host / "hosts.toml").write_text(toml)

    def ours(self, kind: str, changed: bool) -> None:
        command, env = self.commands[kind]
        assert json.loads(run(command, env=env).stdout)["changed"] is changed

    def skopeo(self) -> None:
        for name in self.names:
            run(["skopeo", "copy", "-q", "--src-cert-dir", self.tls.cert_dir, f"docker://{name}", f"oci:{self.skopeo_store}:{name}"])

    def fetch_blobs(self) -> None:
        """benchmarks/floor.py through the proxy: start-up, then every blob fetched, hashed and written durably."""
        env = dict(self.commands["oci"][1], REQUESTS_CA_BUNDLE=self.tls.ca_file)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "floor.py"), str(self.raw)], input=json.dumps(self.blobs), text=True, env=env, check=True)

    def ctr_pulls(self) -> None:
        for name in self.names:
            run([*self.containerd.ctr, "images", "pull", "--hosts-dir", str(self.hosts_dir), "--tlscacert", self.tls.ca_file, name])


def shaped_network(bench: Bench, registry: RegistryServer, corpus: Corpus, containerd: ContainerdService, step: str) -> None:
    """Pulls over a network of the given round-trip time and bandwidth: each side through the same
    ShapingProxy (TLS on the client side, RTT and bandwidth limits), in the same run."""
    rtt, rate = NETWORKS[step]
    profile = f"RTT {rtt * 1000:.0f} ms, {rate * 8 / MB:.0f} Mbit/s"
    tls = test_certificates(bench.work / f"{step}-tls")
    proxy = ShapingProxy(("127.0.0.1", registry.port), rtt, rate, rate, tls.certfile, tls.keyfile).start()
    try:
        pulls = ShapedPulls(bench, registry, corpus, proxy, tls, containerd, step)
        size = f"{len(corpus.names)} images, {corpus.unique_bytes / MB:.0f} MB unique, over TLS"
        reset = ColdPulls.reset

        def compared(title: str, target: str, sides: list, note: str = "") -> list:
            """bench.compare of (label, prepare, counted as, action) sides, then the requests and connections each made; its rows."""
            bench.compare(title, target, [(label, prepare, pulls.counted(counted, action)) for label, prepare, counted, action in sides], note)
            rows = bench.rows[1 - len(sides) :]
            pulls.record_counts(bench, title)
            return rows

        def nothing():
            """The stores hold the corpus from the cold pulls: a no-op run needs no preparing."""

        oci = compared(
            f"cold pull into the OCI store, {profile}",
            "",
            [
                ("image_pull", reset(pulls.store), "image_pull", lambda: pulls.ours("oci", True)),
                ("skopeo copy", reset(pulls.skopeo_store), "skopeo copy", pulls.skopeo),
                # what this machine can do through the proxy at all: the proxy's own work shares its two cores
                ("floor: start-up, then each blob fetched, hashed and fsynced (benchmarks/floor.py)", reset(pulls.raw), "floor.py", pulls.fetch_blobs),
            ],
            size,
        )
        in_containerd = compared(
            f"cold pull into containerd (k8s.io), {profile}",
            "",
            [
                ("image_pull (containerd)", pulls.containerd.empty, "image_pull", lambda: pulls.ours("containerd", True)),
                ("ctr images pull, image by image", pulls.containerd.empty, "ctr", pulls.ctr_pulls),
            ],
            size + ", unpacked",
        )
        command, env = pulls.commands["containerd"]
        run(command, env=env)  # untimed: whichever side pulled last, the names our no-op run looks for are there
        compared(
            f"no-op re-run into containerd (k8s.io), {profile}",
            "<= 0.3x ctr, 0 GETs",
            [
                ("image_pull (containerd)", nothing, "image_pull", lambda: pulls.ours("containerd", False)),
                ("ctr images pull again, image by image", nothing, "ctr", pulls.ctr_pulls),
            ],
        )
        compared(
            f"no-op re-run, OCI store, {profile}",
            "start-up + <= 3 round trips, <= 0.5x skopeo",
            [
                ("image_pull, policy always", nothing, "image_pull", lambda: pulls.ours("oci-always", False)),
                ("skopeo copy again", nothing, "skopeo copy", pulls.skopeo),
            ],
        )
        pulls.record_waits(bench, "image_pull", f"no-op re-run, OCI store, {profile}")
    finally:
        proxy.stop()
    network_floor(bench, corpus, rtt, rate, profile, [*oci, *in_containerd])


def network_floor(bench: Bench, corpus: Corpus, rtt: float, rate: float, profile: str, rows: list) -> None:
    """What the network alone makes a cold pull cost: the unique bytes at the bandwidth, and the round
    trips no pull can overlap: connection set-up, then the manifest, the config, and the first layer's request."""
    chain = {"TCP": 1, "TLS 1.3": 1, "token": 0, "manifest": 1, "config": 1, "first layer": 1}  # the registry is anonymous: no token
    transfer = corpus.unique_bytes / rate
    floor = transfer + sum(chain.values()) * rtt
    ratios = "; ".join(
        f"{ours} {statistics.median(ours_s) / floor:.2f}x, {peer} {statistics.median(peer_s) / floor:.2f}x"
        for title, ours, ours_s, peer, peer_s, _target, _note in rows
        if ours_s is not None and title
    )
    parts = " + ".join(f"{name} {count}" for name, count in chain.items())
    note = (
        f"{corpus.unique_bytes / MB:.1f} MB / {rate / MB:g} MB/s = {transfer:.2f} s, + ({parts}) = {sum(chain.values())} round trips x "
        f"{rtt * 1000:.0f} ms = {sum(chain.values()) * rtt:.2f} s; the cold pulls over it: {ratios}"
    )
    bench.record(f"floor from the network alone, {profile}", f"{floor:.2f} s", "", note)


def shaping_proxy(bench: Bench, registry: RegistryServer, step: str) -> tuple:
    """A ShapingProxy in front of `registry` with the profile the step's name begins with (net50, net100):
    (proxy, its TLS files, rtt, rate, the profile as text)."""
    rtt, rate = NETWORKS[step.split("_", 1)[0]]
    tls = test_certificates(bench.work / f"{step}-tls")
    proxy = ShapingProxy(("127.0.0.1", registry.port), rtt, rate, rate, tls.certfile, tls.keyfile).start()
    return proxy, tls, rtt, rate, f"RTT {rtt * 1000:.0f} ms, {rate * 8 / MB:.0f} Mbit/s"


class ShapedEngine(ProxyCounts):
    """The corpus pulled into the benchmark's Docker Engine through a ShapingProxy: image_pull (store docker;
    the engine pulls) as a module process and in a playbook, `docker pull` image by image, and
    community.docker's docker_image_pull looped over the images in a playbook. The engine trusts the proxy
    without a CA: dockerd counts 127.0.0.0/8 as an insecure registry, which it tries over TLS first
    (certificate unchecked), then plain HTTP only if TLS fails; the counts show whether any plain HTTP was tried."""

    def __init__(self, bench: Bench, registry: RegistryServer, corpus: Corpus, proxy: ShapingProxy, tls: TLSFiles, engine: DockerEngine, step: str):
        super().__init__(registry, proxy)
        self.engine = engine
        self.names = [f"{proxy.host}/{name}" for name in corpus.images]
        args = {"name": self.names, "store": "docker", "docker_host": engine.docker_host, "ca_path": tls.ca_file}
        self.commands, self.playbooks = {}, {}
        for policy in ("missing", "always"):
            folder = bench.work / f"{step}-{policy}"  # module_command names the arguments' file after the module
            folder.mkdir(parents=True, exist_ok=True)
            self.commands[policy] = module_command("image_pull", dict(args, policy=policy), folder)
            self.playbooks[policy] = playbook(folder, f"ours-{policy}", [{"dockyard.images.image_pull": dict(args, policy=policy)}])
        community = {"name": "{{ item }}", "pull": "always", "docker_host": engine.docker_host}
        self.playbooks["peer"] = playbook(bench.work, f"{step}-community", [{"community.docker.docker_image_pull": community, "loop": self.names}])
        config = bench.work / f"{step}-docker-config"  # the CLI's own: no credential helper, no context of the machine
        config.mkdir(parents=True, exist_ok=True)
        self.docker_env = dict(os.environ, DOCKER_HOST=engine.docker_host, DOCKER_CONFIG=str(config))

    def ours(self, policy: str, changed: bool) -> None:
        command, env = self.commands[policy]
        assert json.loads(run(command, env=env).stdout)["changed"] is changed

    def docker_pulls(self) -> None:
        for name in self.names:
            run(["docker", "pull", "-q", name], env=self.docker_env)

    def sides(self, policy: str, changed: bool, prepare) -> list:
        return [
            ("image_pull (docker)", prepare, self.counted("image_pull", lambda: self.ours(policy, changed))),
            ("docker pull, image by image", prepare, self.counted("docker pull", self.docker_pulls)),
            ("image_pull (docker) in ansible-playbook", prepare, self.counted("image_pull in a playbook", lambda: ansible_playbook(self.playbooks[policy]))),
            ("docker_image_pull loop in ansible-playbook", prepare, self.counted("docker_image_pull loop", lambda: ansible_playbook(self.playbooks["peer"]))),
        ]


ENGINE_PAIRS = [
    ("image_pull (docker)", "docker pull, image by image"),
    ("image_pull (docker) in ansible-playbook", "docker_image_pull loop in ansible-playbook"),
]


def shaped_engine(bench: Bench, registry: RegistryServer, corpus: Corpus, engine: DockerEngine, step: str) -> None:
    """Pulls into Docker Engine through a ShapingProxy, each side through the same proxy in the same run:
    a cold pull from an empty engine, then a policy-always re-run with every image present."""
    proxy, tls, rtt, rate, profile = shaping_proxy(bench, registry, step)
    try:
        pulls = ShapedEngine(bench, registry, corpus, proxy, tls, engine, step)
        size = f"{len(corpus.names)} images, {corpus.unique_bytes / MB:.0f} MB unique, over TLS; the engine pulls on every side"
        bench.compare(f"cold pull into Docker Engine, {profile}", "", pulls.sides("missing", True, engine.remove_all_images), size, ENGINE_PAIRS)
        cold = bench.rows[-2:]
        pulls.record_counts(bench, f"cold pull into Docker Engine, {profile}")
        pulls.record_waits(bench, "image_pull", f"cold pull into Docker Engine, {profile}")

        def nothing():
            """The engine holds the corpus from the cold pulls: a no-op run needs no preparing."""

        engine.remove_all_images()
        pulls.ours("missing", True)
        bench.compare(f"no-op re-run on Docker Engine, {profile}", "", pulls.sides("always", False, nothing), "policy always, nothing moved", ENGINE_PAIRS)
        pulls.record_counts(bench, f"no-op re-run on Docker Engine, {profile}")
        pulls.record_waits(bench, "image_pull", f"no-op re-run on Docker Engine, {profile}")
    finally:
        proxy.stop()
    network_floor(bench, corpus, rtt, rate, profile + ", Docker Engine", cold)


MULTI_REPO, MULTI_TAG = "bench/multi", "1"
MULTI_PLATFORMS = (("amd64", ""), ("arm64", "v8"), ("arm", "v7"))
FACTS_TAGS = ("1", "2", "3", "4")


def multi_platform_index(registry: RegistryServer) -> Index:
    """An OCI index of three platforms, each of a 16 MB and a 6 MB layer of its own, pushed as bench/multi:1."""
    images = [
        Image(
            [random_layer(16 * MB, f"bench-multi-base-{arch}{variant}"), random_layer(6 * MB, f"bench-multi-app-{arch}{variant}")],
            architecture=arch,
            variant=variant,
            media_type=OCI_MANIFEST,
        )
        for arch, variant in MULTI_PLATFORMS
    ]
    index = Index(images)
    Pusher(registry.url).index(MULTI_REPO, MULTI_TAG, index)
    return index


class ShapedRegistry(ProxyCounts):
    """Registry-to-registry work through a ShapingProxy: image_copy with platform all of a multi-platform
    index, from the proxy into a second loopback registry (plain HTTP, not through the proxy), against
    `skopeo copy --all`; and image_facts with remote true of 20 tags against `skopeo inspect` of each."""

    def __init__(self, bench: Bench, registry: RegistryServer, corpus: Corpus, proxy: ShapingProxy, tls: TLSFiles, step: str):
        super().__init__(registry, proxy)
        self.tls = tls
        self.destination = RegistryServer(str(bench.work / f"{step}-destination"))
        self.multi = f"{proxy.host}/{MULTI_REPO}:{MULTI_TAG}"
        folder = bench.work / f"{step}-args"  # module_command names the arguments' file after the module
        folder.mkdir(parents=True, exist_ok=True)
        copy_args = {"name": [self.multi], "destination": self.destination.url, "platform": "all", "ca_path": tls.ca_file}
        self.copy_command = module_command("image_copy", copy_args, folder)
        pusher = Pusher(registry.url)
        for name, image in corpus.images.items():
            for tag in FACTS_TAGS:  # the corpus's own tag, 1, and three more naming the same manifest
                pusher.manifest(name.split(":")[0], tag, image.manifest, image.media_type)
        self.references = [f"{proxy.host}/{name.split(':')[0]}:{tag}" for name in corpus.images for tag in FACTS_TAGS]
        self.facts_command = module_command("image_facts", {"name": self.references, "remote": True, "ca_path": tls.ca_file}, folder)

    def empty_destination(self) -> None:
        """The destination registry restarted on an empty storage: nothing there to reuse."""
        self.destination.stop()
        shutil.rmtree(Path(self.destination.workdir) / "data", ignore_errors=True)
        self.destination.start()

    def copy(self) -> None:
        command, env = self.copy_command
        assert json.loads(run(command, env=env).stdout)["changed"] is True

    def skopeo_copy(self) -> None:
        target = f"docker://{self.destination.host}/{MULTI_REPO}:{MULTI_TAG}"
        run(["skopeo", "copy", "-q", "--all", "--src-cert-dir", self.tls.cert_dir, "--dest-tls-verify=false", f"docker://{self.multi}", target])

    def facts(self) -> None:
        command, env = self.facts_command
        assert len(json.loads(run(command, env=env).stdout)["images"]) == len(self.references)

    def skopeo_inspect(self, *options: str):
        def inspect_each() -> None:
            for reference in self.references:
                run(["skopeo", "inspect", *options, "--cert-dir", self.tls.cert_dir, f"docker://{reference}"])

        return inspect_each


def shaped_registry(bench: Bench, registry: RegistryServer, corpus: Corpus, step: str) -> None:
    """image_copy and image_facts (remote) through a ShapingProxy, each side through the same proxy in the same run."""
    proxy, tls, _rtt, _rate, profile = shaping_proxy(bench, registry, step)
    index = multi_platform_index(registry)
    try:
        work = ShapedRegistry(bench, registry, corpus, proxy, tls, step)
        work.destination.start()
        try:
            unique = sum(layer.size for image in index.images for layer in image.layers) + sum(len(image.config) for image in index.images)
            bench.compare(
                f"copy of a {len(index.images)}-platform index to another registry, {profile}",
                "",
                [
                    ("image_copy, platform all", work.empty_destination, work.counted("image_copy", work.copy, also=work.destination)),
                    ("skopeo copy --all", work.empty_destination, work.counted("skopeo copy --all", work.skopeo_copy, also=work.destination)),
                ],
                f"{unique / MB:.0f} MB; the source through the proxy (TLS), the destination a second loopback registry, plain HTTP, not shaped",
            )
            work.record_counts(bench, f"copy of a multi-platform index, {profile}")
            work.record_waits(bench, "image_copy", f"copy of a multi-platform index, {profile}")
        finally:
            work.destination.stop()

        def nothing():
            """Reading a registry changes nothing: no preparing."""

        bench.compare(
            f"remote facts of {len(work.references)} tags, {profile}",
            "",
            [
                ("image_facts, remote", nothing, work.counted("image_facts", work.facts)),
                ("skopeo inspect, each", nothing, work.counted("skopeo inspect", work.skopeo_inspect())),
                ("skopeo inspect --no-tags, each", nothing, work.counted("skopeo inspect --no-tags", work.skopeo_inspect("--no-tags"))),
            ],
            f"{len(corpus.images)} images x {len(FACTS_TAGS)} tags; skopeo inspect lists each repository's tags unless --no-tags",
        )
        work.record_counts(bench, f"remote facts of {len(work.references)} tags, {profile}")
        work.record_waits(bench, "image_facts", f"remote facts of {len(work.references)} tags, {profile}")
    finally:
        proxy.stop()


def memory(bench: Bench, registry: RegistryServer) -> None:
    image = Image([random_layer(1024 * 1024 * 1024, "bench-1gib")])
    Pusher(registry.url).image("bench/huge", "1", image)
    store = bench.work / "oci-huge"
    shutil.rmtree(store, ignore_errors=True)
    result, peak = run_module_process("image_pull", {"name": [f"{registry.host}/bench/huge:1"], "store": "oci", "store_path": str(store)}, bench.work)
    assert result["downloaded_bytes"] == image.layers[0].size
    bench.record("peak RSS pulling one 1 GiB layer", f"{peak / 2**20:.0f} MiB", "< 100 MiB")
    shutil.rmtree(store, ignore_errors=True)


def report(bench: Bench) -> None:
    script = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.dockyard.images.plugins.module_utils._layers import fleet_layer_report
layers = [{"digest": "sha256:%064x" % n, "size": 1000 + n} for n in range(400)]
facts = {}
for host in range(1000):
    images = []
    for image in range(50):
        own = [layers[(image * 7 + k + host % 3) % 400] for k in range(6)]
        images.append({"reference": "registry.example.com/team/app%d:1" % image, "id": "sha256:%064x" % (image + 10**6),
                       "size": sum(l["size"] for l in own) + 500, "layers": own})
    facts["host%04d" % host] = {"store": {"type": "oci"}, "images": images}
start = time.perf_counter()
result = fleet_layer_report(facts)
seconds = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would count the pages of the process it was forked from
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak": peak}))
"""
    done = run([sys.executable, "-c", script, ensure_collection_path()])
    figures = json.loads(done.stdout)
    bench.record("fleet_layer_report, 1,000 hosts x 50 images", f"{figures['seconds']:.2f} s, peak {figures['peak'] / 2**20:.0f} MiB", "< 5 s, < 500 MiB")


def machine() -> str:
    memory_kib = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "?")
    versions = {
        "python": platform.python_version(),
        "skopeo": run(["skopeo", "--version"], check=False).stdout.strip(),
        "docker-registry": run(["docker-registry", "--version"], check=False).stdout.strip(),
        "dockerd": run(["dockerd", "--version"], check=False).stdout.strip(),
        "containerd": run(["containerd", "--version"], check=False).stdout.strip(),
    }
    return f"{platform.platform()}, {os.cpu_count()} CPUs, {int(memory_kib) // 1024 if memory_kib != '?' else '?'} MiB RAM; " + "; ".join(
        f"{k} {v}" for k, v in versions.items()
    )


def write_results(bench: Bench, started: str, results: Optional[Path]) -> None:
    """The table, printed; written to `results` (keeping the hand-written history below it) unless None."""
    lines = [
        "# Benchmark results",
        "",
        f"Measured {started} on: {machine()}.",
        f"Each comparison ran {bench.runs} times, alternating the sides; medians shown, the fastest and slowest run in brackets.",
        "Ratios are of the medians; lower is better.",
        "",
        "| comparison | ours | peer | ratio | target | note |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for title, ours, ours_s, peer, peer_s, target, note in bench.rows:
        if ours_s is None:
            lines.append(f"| {title} | {ours} | | | {target} | {note} |")
        else:
            lines.append(f"| {title} | {ours} {spread(ours_s)} | {peer} {spread(peer_s)} | {ratio(ours_s, peer_s)} | {target} | {note} |")
    print("\n".join(lines))
    if results is None:
        return
    history = results.read_text().partition(HISTORY)[2] if results.exists() else ""
    results.write_text("\n".join(lines) + "\n\n" + HISTORY + (history or "\n"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, choices=STEPS, help="run only these comparisons")
    parser.add_argument("--results", type=Path, help="write the table there (default: benchmarks/RESULTS.md when every comparison runs, else only print it)")
    options = parser.parse_args()
    wanted = set(options.only or STEPS)
    results = options.results or (REPO / "benchmarks" / "RESULTS.md" if wanted == set(STEPS) else None)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    registry = RegistryServer(str(work / "registry")).start()
    engine = DockerEngine(str(work / "docker")).start() if wanted & {"noop", "cold_engine", "deliver", "fleet", "net50_docker", "net100_docker"} else None
    containerd = ContainerdService(str(work / "containerd")).start() if wanted & {"cold_containerd", "noop_containerd", *NETWORKS} else None
    try:
        bench = Bench(options.runs, work)
        corpus = Corpus(registry)
        steps = {
            "cold_oci": lambda: cold_oci(bench, registry, corpus),
            "cold_oci_large": lambda: cold_oci_large(bench, registry),
            "noop": lambda: noop_reruns(bench, registry, corpus, engine),
            "cold_engine": lambda: cold_engine(bench, corpus, engine),
            "cold_containerd": lambda: cold_containerd(bench, corpus, containerd),
            "noop_containerd": lambda: noop_containerd(bench, registry, corpus, containerd),
            "memory": lambda: memory(bench, registry),
            "fleet": lambda: fleet(bench, registry, corpus, engine, timed_blob_bytes),
            "report": lambda: report(bench),
            "deliver": lambda: deliver(bench, registry, corpus, engine),
            "net50": lambda: shaped_network(bench, registry, corpus, containerd, "net50"),
            "net100": lambda: shaped_network(bench, registry, corpus, containerd, "net100"),
            "net50_docker": lambda: shaped_engine(bench, registry, corpus, engine, "net50_docker"),
            "net100_docker": lambda: shaped_engine(bench, registry, corpus, engine, "net100_docker"),
            "net50_registry": lambda: shaped_registry(bench, registry, corpus, "net50_registry"),
            "net100_registry": lambda: shaped_registry(bench, registry, corpus, "net100_registry"),
        }
        for name, step in steps.items():
            if name in wanted:
                step()
        write_results(bench, started, results)
    finally:
        if containerd:
            containerd.stop()
        if engine:
            engine.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
