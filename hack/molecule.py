"""Run the Molecule scenarios against real containers: builds the platform image (a Debian rootfs
made by debootstrap, with python3 and python3-requests, imported into a Docker Engine started here
with its own directories), starts a registry on loopback with images that share a base layer, and
runs `molecule test`. The containers use the host's network, so they reach that registry; those of
molecule/airgap have no network at all, and get the images from the controller."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.ansible import ansible_env  # noqa: E402
from support.debian import debian_image  # noqa: E402
from support.engines import DockerEngine  # noqa: E402
from support.images import Image, Pusher, make_layer, random_layer  # noqa: E402
from support.registry import RegistryServer, free_port  # noqa: E402

# Platform images: the fleet's, one per Debian release users run (Debian 11, 12 and 13, with Python
# 3.9, 3.11 and 3.13), with only that release's python3 and python3-requests; the mirror's
# (systemd as PID 1); and a Kubernetes node's (Debian's containerd and its ctr). The suite is the image's tag.
FLEET = ["dockyard-test-debian:bullseye", "dockyard-test-debian:bookworm", "dockyard-test-debian:trixie"]
IMAGES = {
    **dict.fromkeys(FLEET, "python3,python3-requests"),
    "dockyard-test-debian-systemd:bookworm": "python3,python3-requests,systemd,systemd-sysv,docker-registry",
    "dockyard-test-debian-containerd:bookworm": "python3,python3-requests,containerd",
}
SCENARIO_IMAGES = {
    "default": FLEET,
    "mirror": ["dockyard-test-debian-systemd:bookworm"],
    "engine": [],
    "containerd": ["dockyard-test-debian-containerd:bookworm"],
    "airgap": ["dockyard-test-debian:bookworm"],
}


def build_platform_image(engine: DockerEngine, work: str, image: str) -> None:
    debian_image(engine, os.path.join(work, "rootfs-" + image.replace(":", "-")), image, IMAGES[image].split(","))


# What the registry must have served each scenario that pulls from it: each blob once, the shared base too.
EACH_BLOB_ONCE = {
    "mirror": "a seed and three pulls through the cache",
    "containerd": "a pre-warm of the node and a second one that moves nothing",
    "airgap": "the controller's pulls for two air-gapped hosts, the base image first, then the release, twice",
}


def check_each_blob_served_once(registry: RegistryServer, mark: int, images: list, what: str) -> None:
    fetched = Counter(path.rsplit("/", 1)[1] for method, path, status in registry.requests_since(mark) if method == "GET" and "/blobs/" in path)
    wanted = {layer.digest for image in images for layer in image.layers} | {image.id for image in images}
    if fetched != Counter(dict.fromkeys(wanted, 1)):
        raise SystemExit(f"the registry served {dict(fetched)} for {what}, not each blob once")


# The images the registry serves, all sharing a base layer: what the fleet's scenarios pull, and what
# molecule/airgap delivers, with an image of the base alone that one of its hosts holds beforehand.
FLEET_IMAGES = ["fleet/web:1", "fleet/api:1"]
AIRGAP_IMAGES = ["fleet/web:1", "fleet/api:1", "fleet/worker:1"]
AIRGAP_BASE = "fleet/base:1"


def seed(registry: RegistryServer) -> dict:
    base = random_layer(2_000_000, "molecule-base")
    images = {
        "fleet/web:1": Image([base, make_layer({"web": b"web\n" * 1000})]),
        "fleet/api:1": Image([base, make_layer({"api": b"api\n" * 1000})]),
        "fleet/worker:1": Image([base, make_layer({"worker": b"worker\n" * 1000})]),
        AIRGAP_BASE: Image([base]),
    }
    for name, image in images.items():
        repo, tag = name.split(":")
        Pusher(registry.url).image(repo, tag, image)
    return images


def airgap_figures(registry: RegistryServer, images: dict) -> dict:
    """What molecule/airgap checks: the names, the base image, and what a delivery of the images sends a host
    that holds nothing: each manifest, config and layer once."""
    release = [images[name] for name in AIRGAP_IMAGES]
    blobs = {image.digest: len(image.manifest) for image in release}
    blobs.update({image.id: len(image.config) for image in release})
    blobs.update({layer.digest: layer.size for image in release for layer in image.layers})
    return {
        "images": [f"{registry.host}/{name}" for name in AIRGAP_IMAGES],
        "base_image": f"{registry.host}/{AIRGAP_BASE}",
        "base_layer_bytes": images[AIRGAP_BASE].layers[0].size,
        "sent_bytes": sum(blobs.values()),
        "sent_blobs": len(blobs),
    }


def unmount_under(top: str) -> None:
    """Unmount what a stopped engine left mounted under `top` (dockerd keeps its network namespace bind-mounted
    in its exec root after it exits), deepest first, so that the work directory can be removed."""
    with open("/proc/self/mounts", encoding="utf-8") as handle:
        points = [fields[1] for fields in (line.split() for line in handle) if fields[1].startswith(top + os.sep)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)


def main(scenarios: list) -> int:
    work = tempfile.mkdtemp(prefix="dockyard-molecule-")
    engine = DockerEngine(os.path.join(work, "docker")).start()
    registry = RegistryServer(os.path.join(work, "registry")).start()
    try:
        with ThreadPoolExecutor() as pool:  # debootstrap waits on the archive more than on the CPU
            list(pool.map(functools.partial(build_platform_image, engine, work), {image for scenario in scenarios for image in SCENARIO_IMAGES[scenario]}))
        images = seed(registry)
        served = {scenario: [images[name] for name in FLEET_IMAGES] for scenario in EACH_BLOB_ONCE}
        served["airgap"] = [images[name] for name in [*AIRGAP_IMAGES, AIRGAP_BASE]]
        env = ansible_env(
            {
                "DOCKER_HOST": engine.docker_host,
                "DOCKYARD_MOLECULE_IMAGES": ",".join(f"{registry.host}/{name}" for name in FLEET_IMAGES),
                "DOCKYARD_MOLECULE_AIRGAP": json.dumps(airgap_figures(registry, images)),
                "DOCKYARD_MOLECULE_REPORT": os.path.join(work, "report"),
                "DOCKYARD_MOLECULE_ENGINE": engine.docker_host,
                "DOCKYARD_MOLECULE_UPSTREAM": registry.url,
                "DOCKYARD_MOLECULE_MIRROR": f"127.0.0.1:{free_port()}",
                "DOCKYARD_MOLECULE_SEED": f"127.0.0.1:{free_port()}",
                "DOCKYARD_MOLECULE_WORK": work,
            }
        )
        for scenario in scenarios:
            scenario_env = dict(env)
            if scenario != "engine":
                scenario_env.pop("ANSIBLE_PYTHON_INTERPRETER", None)  # containers have their own python3
            mark = registry.mark()
            started = time.monotonic()
            done = subprocess.run(["molecule", "test", "-s", scenario], cwd=REPO, env=scenario_env, check=False)
            print(f"== molecule test -s {scenario}: {time.monotonic() - started:.0f} s", flush=True)
            if done.returncode != 0:
                return done.returncode
            if scenario in EACH_BLOB_ONCE:
                check_each_blob_served_once(registry, mark, served[scenario], EACH_BLOB_ONCE[scenario])
        return 0
    finally:
        registry.stop()
        engine.stop()
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["default", "engine", "mirror", "containerd", "airgap"]))
