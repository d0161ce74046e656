"""Run the Molecule scenarios against real containers: builds the platform image (a Debian rootfs
made by debootstrap, with python3 and python3-requests, imported into a Docker Engine started here
with its own directories), starts a registry on loopback with images that share a base layer, and
runs `molecule test`. The containers use the host's network, so they reach that registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.ansible import ansible_env  # noqa: E402
from support.engines import DockerEngine  # noqa: E402
from support.images import Image, Pusher, make_layer, random_layer  # noqa: E402
from support.registry import RegistryServer  # noqa: E402

IMAGE = "dockyard-test-debian:bookworm"
MIRROR = "http://deb.debian.org/debian"


def build_platform_image(engine: DockerEngine, work: str) -> None:
    env = dict(os.environ, DOCKER_HOST=engine.docker_host)
    if subprocess.run(["docker", "image", "inspect", IMAGE], env=env, capture_output=True, check=False).returncode == 0:
        return
    rootfs = os.path.join(work, "rootfs")
    subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-requests", "bookworm", rootfs, MIRROR], check=True, capture_output=True)
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, env=env, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def seed(registry: RegistryServer) -> list:
    base = random_layer(2_000_000, "molecule-base")
    images = {
        "fleet/web:1": Image([base, make_layer({"web": b"web\n" * 1000})]),
        "fleet/api:1": Image([base, make_layer({"api": b"api\n" * 1000})]),
    }
    for name, image in images.items():
        repo, tag = name.split(":")
        Pusher(registry.url).image(repo, tag, image)
    return [f"{registry.host}/{name}" for name in images]


def main(scenarios: list) -> int:
    work = tempfile.mkdtemp(prefix="dockyard-molecule-")
    engine = DockerEngine(os.path.join(work, "docker")).start()
    registry = RegistryServer(os.path.join(work, "registry")).start()
    try:
        build_platform_image(engine, work)
        names = seed(registry)
        env = ansible_env(
            {
                "DOCKER_HOST": engine.docker_host,
                "DOCKYARD_MOLECULE_IMAGES": ",".join(names),
                "DOCKYARD_MOLECULE_REPORT": os.path.join(work, "report"),
                "DOCKYARD_MOLECULE_ENGINE": engine.docker_host,
            }
        )
        for scenario in scenarios:
            scenario_env = dict(env)
            if scenario != "engine":
                scenario_env.pop("ANSIBLE_PYTHON_INTERPRETER", None)  # the containers have their own python3
            done = subprocess.run(["molecule", "test", "-s", scenario], cwd=REPO, env=scenario_env, check=False)
            if done.returncode != 0:
                return done.returncode
        return 0
    finally:
        registry.stop()
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["default", "engine"]))
