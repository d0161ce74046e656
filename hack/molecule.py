"""Run the Molecule scenarios against real containers: builds the platform image (a Debian rootfs
made by debootstrap, with python3 and python3-requests, imported into a Docker Engine started here
with its own directories), starts a registry on loopback with images that share a base layer, and
runs `molecule test`. The containers use the host's network, so they reach that registry."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.ansible import ansible_env  # noqa: E402
from support.engines import DockerEngine  # noqa: E402
from support.images import Image, Pusher, make_layer, random_layer  # noqa: E402
from support.registry import RegistryServer, free_port  # noqa: E402

# Platform images: the fleet's (python3 and requests only) and the mirror's (systemd as PID 1).
IMAGES = {
    "dockyard-test-debian:bookworm": "python3,python3-requests",
    "dockyard-test-debian-systemd:bookworm": "python3,python3-requests,systemd,systemd-sysv,docker-registry",
}
SCENARIO_IMAGES = {"default": ["dockyard-test-debian:bookworm"], "mirror": ["dockyard-test-debian-systemd:bookworm"], "engine": []}


def apt_mirror(suite: str = "bookworm") -> str:
    """The Debian archive this machine's own apt sources name for `suite` (deb822 or one-line form),
    so that debootstrap goes where apt goes: a user's own mirror, or a local one offline."""
    found = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8") as handle:
            for stanza in handle.read().split("\n\n"):
                fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith(("#", " ")))
                fields = {key.strip().lower(): value.split() for key, value in fields.items()}
                if "deb" in fields.get("types", []) and suite in fields.get("suites", []):
                    found += fields.get("uris", [])
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                for words in (re.sub(r"\[[^\]]*\]", " ", line).split() for line in handle):  # options such as [arch=amd64]
                    if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                        found.append(words[1])
    if not found:
        raise SystemExit(f"no apt source for Debian {suite} in /etc/apt: debootstrap needs the archive apt uses")
    return found[0]


def build_platform_image(engine: DockerEngine, work: str, image: str) -> None:
    env = dict(os.environ, DOCKER_HOST=engine.docker_host)
    if subprocess.run(["docker", "image", "inspect", image], env=env, capture_output=True, check=False).returncode == 0:
        return
    rootfs = os.path.join(work, "rootfs")
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={IMAGES[image]}", "bookworm", rootfs, apt_mirror()], check=True, capture_output=True)
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", image], stdin=tar.stdout, env=env, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def check_upstream_egress(registry: RegistryServer, mark: int, images: list) -> None:
    """The seed endpoint was filled, then three stores pulled through the cache: the upstream served each blob once."""
    fetched = Counter(path.rsplit("/", 1)[1] for method, path, status in registry.requests_since(mark) if method == "GET" and "/blobs/" in path)
    wanted = {layer.digest for image in images for layer in image.layers} | {image.id for image in images}
    if fetched != Counter(dict.fromkeys(wanted, 1)):
        raise SystemExit(f"the upstream served {dict(fetched)} for a seed and three pulls through the cache, not each blob once")


def seed(registry: RegistryServer) -> tuple:
    base = random_layer(2_000_000, "molecule-base")
    images = {
        "fleet/web:1": Image([base, make_layer({"web": b"web\n" * 1000})]),
        "fleet/api:1": Image([base, make_layer({"api": b"api\n" * 1000})]),
    }
    for name, image in images.items():
        repo, tag = name.split(":")
        Pusher(registry.url).image(repo, tag, image)
    return [f"{registry.host}/{name}" for name in images], list(images.values())


def main(scenarios: list) -> int:
    work = tempfile.mkdtemp(prefix="dockyard-molecule-")
    engine = DockerEngine(os.path.join(work, "docker")).start()
    registry = RegistryServer(os.path.join(work, "registry")).start()
    try:
        for scenario in scenarios:
            for image in SCENARIO_IMAGES[scenario]:
                build_platform_image(engine, work, image)
        names, images = seed(registry)
        env = ansible_env(
            {
                "DOCKER_HOST": engine.docker_host,
                "DOCKYARD_MOLECULE_IMAGES": ",".join(names),
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
            done = subprocess.run(["molecule", "test", "-s", scenario], cwd=REPO, env=scenario_env, check=False)
            if done.returncode != 0:
                return done.returncode
            if scenario == "mirror":
                check_upstream_egress(registry, mark, images)
        return 0
    finally:
        registry.stop()
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["default", "engine", "mirror"]))
