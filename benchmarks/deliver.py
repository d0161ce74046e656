"""image_deliver against the usual way to bring images to a host with no registry: `docker save` on the
controller, the archive copied over the connection, `docker load` on the host; both through ansible-playbook
over the same local connection, in the same run.

The controller holds the five corpus images in an OCI store (image_deliver's source) and in a Docker Engine
of its own (`docker save`'s source). The host is a second Docker Engine (its own data root and socket).
Before each run the host is reset to hold half the corpus's layers: every image removed, then the first
image (app0: the base, the runtime and its own layer) pulled into it again; the five images are then
delivered. Used by benchmarks/run.py (`--only deliver`). Its rows:

- the time of the delivery each way (ansible-playbook start to end), image_deliver against the peer;
- bytes carried / bytes missing: image_deliver's sent_bytes over what the host lacked, from the registry's
  manifests (each manifest, config and layer of the images it lacks, once), for the five images to the engine,
  for only the four images it lacks (the layers it holds then belong to no image of the delivery), and for the
  five images to a host whose store is an OCI layout holding app0 too.

A delivery that fails is reported in its rows (not timed), not raised: the rows say what the code does.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from support.ansible import read_results, recording_env
from support.engines import DockerEngine
from support.images import DOCKER_MANIFEST, OCI_MANIFEST
from support.process import module_command
from support.registry import RegistryServer

if TYPE_CHECKING:
    from run import Bench, Corpus

MB = 1_000_000
HELD = 1  # the host holds the corpus's first image(s): app0 brings the base and the runtime, about half the bytes


@dataclass(frozen=True)
class ServedImage:
    """One image as the registry serves it: digest and size of its manifest, its config and each layer."""

    manifest: tuple[str, int]
    config: tuple[str, int]
    layers: tuple[tuple[str, int], ...]

    def blobs(self) -> dict[str, int]:
        return dict([self.manifest, self.config, *self.layers])


def served_image(registry: RegistryServer, name: str) -> ServedImage:
    """The image's manifest fetched from the loopback registry, its digest, and the sizes it gives its blobs."""
    repository, tag = name.split("/", 1)[1].rsplit(":", 1)
    request = urllib.request.Request(f"{registry.url}/v2/{repository}/manifests/{tag}", headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body, digest = response.read(), response.headers["Docker-Content-Digest"]
    manifest = json.loads(body)
    layers = tuple((layer["digest"], layer["size"]) for layer in manifest["layers"])
    return ServedImage((digest, len(body)), (manifest["config"]["digest"], manifest["config"]["size"]), layers)


def missing_bytes(images: dict[str, ServedImage], held: list[str]) -> int:
    """What a host holding the images `held` lacks of `images`, each blob once: the manifest and the config of every
    image it lacks, and every layer that no image it holds has. image_deliver's sent_bytes counts the same things
    (each manifest and config of an image the host lacks, each layer blob it sends), so 1.00 is the floor."""
    have = {digest for name in held for digest in images[name].blobs()}
    lacking = {}
    for name, image in images.items():
        if name not in held:
            lacking.update({digest: size for digest, size in image.blobs().items() if digest not in have})
    return sum(lacking.values())


def write_play(path: Path, tasks: list) -> str:
    path.write_text(json.dumps([{"name": path.stem, "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]))
    return str(path)


class PlayFailed(RuntimeError):
    """A playbook whose task failed; `result` is that task's result."""

    def __init__(self, path: str, result: dict, output: str):
        super().__init__(f"{path} failed: {json.dumps(result)[-3000:]}{output[-1500:]}")
        self.result = result


def play(path: str, results: Path) -> list:
    """Run a playbook against localhost (local connection); every task's result, as the recording callback kept it."""
    results.unlink(missing_ok=True)
    env = recording_env(str(results), {"ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", path], capture_output=True, text=True, env=env, check=False
    )
    recorded = read_results(str(results)) if results.exists() else []
    if done.returncode != 0:
        failed = [dict(entry["result"], failed=True) for entry in recorded if entry["status"] != "ok"]
        raise PlayFailed(path, failed[0] if failed else {"failed": True, "msg": done.stderr[-400:]}, done.stdout + done.stderr)
    return recorded


def pull(names: list, store: dict, work: Path) -> None:
    """image_pull as a module process from the loopback registry into a store (not timed: setting up)."""
    command, env = module_command("image_pull", dict(store, name=names), work)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or json.loads(done.stdout).get("failed"):
        raise RuntimeError(f"image_pull into {store} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


class Delivery:
    """The controller (an OCI store and a Docker Engine holding the corpus), one host, and both ways to deliver."""

    def __init__(self, bench: Bench, corpus: Corpus, controller: DockerEngine, host: DockerEngine):
        self.work = bench.work / "deliver"
        self.work.mkdir(parents=True, exist_ok=True)
        self.corpus, self.controller, self.host = corpus, controller, host
        self.names, self.held = list(corpus.names), list(corpus.names[:HELD])
        self.source = self.work / "controller-oci"
        self.archive, self.landed = self.work / "controller-corpus.tar", self.work / "host-corpus.tar"
        self.oci_host, self.oci_template = self.work / "host-oci", self.work / "host-oci-held"
        self.results = []  # image_deliver's result of each timed run to the engine

    def fill(self) -> None:
        pull(self.names, {"store": "oci", "store_path": str(self.source)}, self.work)
        pull(self.names, {"store": "docker", "docker_host": self.controller.docker_host}, self.work)
        pull(self.held, {"store": "oci", "store_path": str(self.oci_template)}, self.work)

    def reset_engine_host(self) -> None:
        """The host engine holds the held images and nothing else; no archive is left from the peer's last run."""
        self.archive.unlink(missing_ok=True)
        self.landed.unlink(missing_ok=True)
        self.host.remove_all_images()
        pull(self.held, {"store": "docker", "docker_host": self.host.docker_host}, self.work)
        if sorted(image["Id"] for image in self.host.api("GET", "/images/json")[1]) != sorted(self.ids(self.held)):
            raise RuntimeError("the host engine does not hold exactly the held images after its reset")

    def reset_oci_host(self) -> None:
        shutil.rmtree(self.oci_host, ignore_errors=True)
        shutil.copytree(self.oci_template, self.oci_host, symlinks=True)

    def ids(self, names: list) -> list:
        images = dict(zip(self.corpus.names, self.corpus.images.values()))
        return [images[name].id for name in names]

    def deliver(self, store: dict, names: Optional[list] = None) -> dict:
        """dockyard.images.image_deliver of the five images (or `names`) through ansible-playbook; its task result, failed or not."""
        task = {"dockyard.images.image_deliver": dict(store, name=names or self.names, source_path=str(self.source))}
        try:
            return play(write_play(self.work / "ours.yml", [task]), self.work / "ours.jsonl")[0]["result"]
        except PlayFailed as failed:  # a finding, for the rows to report
            return failed.result

    @property
    def engine_store(self) -> dict:
        return {"store": "docker", "docker_host": self.host.docker_host}

    def ours(self) -> None:
        """One timed delivery to the engine host; it must succeed, as the first (untimed) one did."""
        result = self.deliver(self.engine_store)
        if result.get("failed"):
            raise RuntimeError(f"image_deliver failed in a timed run: {result.get('reason')}: {str(result.get('msg'))[:1000]}")
        self.results.append(result)

    def peer_play(self) -> str:
        """docker save of the five images into one archive on the controller, the archive copied (ansible.builtin.copy),
        docker load on the host: one playbook, the same local connection."""
        save = {"argv": ["docker", "save", "-o", str(self.archive), *self.names]}
        load = {"argv": ["docker", "load", "-i", str(self.landed)]}
        tasks = [  # docker save runs on the controller, as it would with any other connection
            {"name": "docker save", "delegate_to": "localhost", "ansible.builtin.command": save, "environment": {"DOCKER_HOST": self.controller.docker_host}},
            {"name": "copy", "ansible.builtin.copy": {"src": str(self.archive), "dest": str(self.landed), "mode": "0600"}},
            {"name": "docker load", "ansible.builtin.command": load, "environment": {"DOCKER_HOST": self.host.docker_host}},
        ]
        return write_play(self.work / "peer.yml", tasks)

    def host_holds_all(self) -> bool:
        held = {image["Id"] for image in self.host.api("GET", "/images/json")[1]}
        tagged = all(self.host.inspect(name) is not None for name in self.names)
        return tagged and held == set(self.ids(self.names))


def deliver(bench: Bench, registry: RegistryServer, corpus: Corpus, controller: DockerEngine) -> None:
    """Rows: image_deliver to a Docker Engine host against docker save + copy + docker load, in seconds; the bytes
    image_deliver carried over the bytes the host lacked, to that engine (all five images, then only the four it
    lacks) and to an OCI-store host. A delivery that fails is reported in its rows, not timed."""
    host = DockerEngine(str(bench.work / "deliver-host-engine")).start()
    try:
        delivery = Delivery(bench, corpus, controller, host)
        delivery.fill()
        images = {name: served_image(registry, name) for name in corpus.names}
        missing, half = missing_bytes(images, delivery.held), holding(images, delivery.held)
        engine_rows(bench, delivery, missing, half)
        lacking_row(bench, delivery, missing, half)
        oci_row(bench, delivery, missing, half)
    finally:
        host.stop()


def holding(images: dict[str, ServedImage], held: list[str]) -> str:
    """What the host holds before each run, for the notes: the images, and their share of the corpus's layers."""
    layers = {digest: size for image in images.values() for digest, size in image.layers}
    kept = {digest: size for name in held for digest, size in images[name].layers}
    share = f"{sum(kept.values()) / MB:.0f} of {sum(layers.values()) / MB:.0f} MB of unique layers ({len(kept)} of {len(layers)} layers)"
    return f"{', '.join(name.split('/', 1)[1] for name in held)}: {share}"


def engine_rows(bench: Bench, delivery: Delivery, missing: int, half: str) -> None:
    """The time of the five images delivered to the engine host, each way, and the bytes image_deliver carried.
    One untimed run of each side first warms both and checks that each leaves the host holding the five images."""
    title, target = "deliver 5 images to a Docker Engine host holding half their layers", "<= 0.5x docker save + copy + docker load"
    note = f"the host holds {half}; both through ansible-playbook, local connection"
    bytes_title = "deliver 5 images to a Docker Engine host: bytes carried / bytes missing"
    delivery.reset_engine_host()
    first = delivery.deliver(delivery.engine_store)
    problem = problem_of(first, delivery)
    if problem:
        bench.record(title, f"not timed: image_deliver {problem}", target, note)
        record_bytes(bench, bytes_title, [first], missing, half, problem)
        return
    delivery.reset_engine_host()
    peer = delivery.peer_play()
    play(peer, delivery.work / "peer.jsonl")
    if not delivery.host_holds_all():
        raise RuntimeError("docker save + copy + docker load left the host engine without one of the five images")
    archive = delivery.landed.stat().st_size
    bench.compare(
        title,
        target,
        [
            ("image_deliver (docker)", delivery.reset_engine_host, delivery.ours),
            ("docker save + copy + docker load", delivery.reset_engine_host, lambda: play(peer, delivery.work / "peer.jsonl")),
        ],
        f"{note}; the peer's archive {archive / MB:.0f} MB, left in place (its removal not timed); each side run once untimed first",
    )
    record_bytes(bench, bytes_title, delivery.results, missing, half)


def lacking_row(bench: Bench, delivery: Delivery, missing: int, half: str) -> None:
    """Only the four images the engine lacks delivered: the layers it holds belong to no image of the delivery, so
    this row shows whether an engine host is sent an image it lacks whole (the layers it holds too)."""
    lacking = [name for name in delivery.names if name not in delivery.held]
    delivery.reset_engine_host()
    result = delivery.deliver(delivery.engine_store, lacking)
    title = "deliver the 4 images a Docker Engine host lacks: bytes carried / bytes missing"
    record_bytes(bench, title, [result], missing, half, problem_of(result, delivery))


def oci_row(bench: Bench, delivery: Delivery, missing: int, half: str) -> None:
    """The five images delivered to a host whose store is an OCI layout holding the same image: one run, for bytes."""
    delivery.reset_oci_host()
    result = delivery.deliver({"store": "oci", "store_path": str(delivery.oci_host)})
    problem = problem_of(result)
    if not problem and len(result.get("images") or []) != len(delivery.names):
        problem = f"named {len(result.get('images') or [])} images, not {len(delivery.names)}"
    record_bytes(bench, "deliver 5 images to an OCI-store host: bytes carried / bytes missing", [result], missing, half, problem)


def problem_of(result: dict, delivery: Optional[Delivery] = None) -> Optional[str]:
    """What went wrong with a delivery: its failure, or (given the engine host's delivery) an image the host lacks after it."""
    if result.get("failed"):
        first, *more = str(result.get("msg")).split("; ")  # one message per image: the first says enough
        return f"failed ({result.get('reason')}): {first[:300]}" + (f" (and {len(more)} more)" if more else "")
    if delivery is not None and not delivery.host_holds_all():
        return "left the host engine without one of the five images"
    return None


def record_bytes(bench: Bench, title: str, results: list, missing: int, half: str, problem: Optional[str] = None) -> None:
    """sent_bytes (image_deliver's own count of what it carried: each manifest, config and layer sent) over what
    the host lacked (from the registry's manifests: each manifest, config and layer of the images it lacks, once)."""
    note = f"the host holds {half}; sent_bytes / manifests, configs and layers the host lacked"
    if "sent_bytes" not in results[-1]:
        bench.record(title, f"no figure: image_deliver {problem}", "1.00", note)
        return
    sent = [result["sent_bytes"] for result in results]
    spread = "" if len(set(sent)) == 1 else f", runs sent {min(sent) / MB:.1f}-{max(sent) / MB:.1f} MB"
    counts = f"{results[-1]['sent_blobs']} blobs, held_bytes {results[-1]['held_bytes'] / MB:.1f} MB"
    value = f"{statistics.median(sent) / missing:.2f} ({statistics.median(sent) / MB:.1f} MB of {missing / MB:.1f} MB; {counts}{spread})"
    bench.record(title, value + (f"; but the delivery {problem}" if problem else ""), "1.00", note)
