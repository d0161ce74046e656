"""README's commands as a new user meets them: the demo command pasted into a root shell on a clean
Debian 12 (a minbase system with ca-certificates, root, the checkout and nothing else), in a
container built by debootstrap; and CI running the test command exactly as README writes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from support.ansible import REPO
from support.debian import debian_image
from support.engines import DockerEngine


def readme_command(script: str) -> str:
    """The command README gives for `script` (hack/demo.sh or hack/test.sh), as written there."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        found = re.findall(rf"^({re.escape(script)})(?:\s+#.*)?$", handle.read(), re.M)
    assert found, f"README gives no {script} command"
    return found[0]


@pytest.fixture(scope="module")
def clean_debian(tmp_path_factory):
    work = tmp_path_factory.mktemp("clean-debian")
    engine = DockerEngine(str(work / "docker")).start()
    try:
        yield engine, debian_image(engine, str(work / "rootfs"), "dockyard-clean-debian:bookworm", ["ca-certificates"])
    finally:
        engine.stop()


def checkout_copy(target) -> str:
    """The files of this checkout that git tracks or would track, and nothing it ignores (.venv/, caches)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = os.path.join(REPO, name)
        if os.path.lexists(source):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, name), follow_symlinks=False)
    return str(target)


def pip_trust() -> list:
    """What this machine's pip trusts for PyPI (a proxy's certificate authority, where there is one), so
    that pip in the container reaches PyPI the way pip here does; nothing else of the machine goes in."""
    bundle = os.environ.get("PIP_CERT")
    if not bundle:
        pip = [os.path.join(REPO, ".venv", "bin", "python"), "-m", "pip"]
        asked = subprocess.run([*pip, "config", "get", "global.cert"], capture_output=True, text=True, check=False)
        bundle = asked.stdout.strip() if asked.returncode == 0 else ""
    return ["-v", f"{bundle}:/etc/dockyard-pip-ca.pem:ro", "-e", "PIP_CERT=/etc/dockyard-pip-ca.pem"] if bundle and os.path.isfile(bundle) else []


def test_the_demo_command_from_readme_runs_on_a_clean_debian_12(clean_debian, tmp_path):
    engine, image = clean_debian
    checkout = checkout_copy(tmp_path / "checkout")
    # README's command, then a look at Debian's own Python: nothing may have been installed into it
    script = f"{readme_command('hack/demo.sh')}; status=$?; /usr/bin/python3 -c 'import ansible' 2>/dev/null && echo 'ansible in Debian python3'; exit $status"
    command = ["docker", "run", "--rm", "--network", "host", "-v", f"{checkout}:/src", "-w", "/src", *pip_trust(), image, "bash", "-c", script]
    done = subprocess.run(command, env=dict(os.environ, DOCKER_HOST=engine.docker_host), capture_output=True, text=True, timeout=1800, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert re.search(r'"REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\s+SHARED\s+UNIQUE"', done.stdout), output[-5000:]
    assert re.search(r'"5 images, 6 layers: \S+ logical, \S+ on disk, \S+ saved by sharing 2 layers"', done.stdout), output[-5000:]
    assert "ansible in Debian python3" not in output
    with open(os.path.join(checkout, ".venv", "pyvenv.cfg"), encoding="utf-8") as handle:
        assert "home = /usr/bin\n" in handle.read(), "the venv is made with Debian's python3"


def test_ci_runs_the_test_command_exactly_as_readme_writes_it():
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert readme_command("hack/test.sh") in lines
