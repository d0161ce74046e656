"""Debian images for tests: a root filesystem made by debootstrap (minbase, plus the packages named)
from the archive this machine's own apt sources use, imported into a Docker Engine. They are the
Molecule fleet's hosts and the clean machine README's commands are tried on."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

from support.engines import DockerEngine


def debian_image(engine: DockerEngine, rootfs: str, image: str, packages: list) -> str:
    """Build `image` (its tag is the Debian suite: `name:bookworm`) unless the engine has it."""
    env = dict(os.environ, DOCKER_HOST=engine.docker_host)
    if subprocess.run(["docker", "image", "inspect", image], env=env, capture_output=True, check=False).returncode == 0:
        return image
    suite = image.rsplit(":", 1)[1]
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, rootfs, apt_mirror(suite)]
    subprocess.run(command, check=True, capture_output=True)
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", image], stdin=tar.stdout, env=env, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return image


def apt_mirror(suite: str) -> str:
    """The Debian archive this machine's own apt sources name for `suite` (deb822 or one-line form),
    or, for another release than the machine's, the archive they name for the machine's own: so that
    debootstrap goes where apt goes, a user's own mirror or a local one offline."""
    uris = _apt_uris(suite) or _apt_uris(_own_suite())
    if not uris:
        raise RuntimeError(f"no apt source for Debian {suite} or {_own_suite()} in /etc/apt: debootstrap needs the archive apt uses")
    return uris[0]


def _own_suite() -> str:
    with open("/etc/os-release", encoding="utf-8") as handle:
        fields = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
    return fields.get("VERSION_CODENAME", "").strip('"')


def _apt_uris(suite: str) -> list:
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
    return found
