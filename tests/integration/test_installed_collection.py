"""The collection as users install it: `ansible-galaxy collection build` of the checkout, `ansible-galaxy
collection install` of that tarball into a fresh collections path, and everything run from that copy
only: README's quick-start playbook against the test registry, `ansible-builder introspect` on its
execution-environment metadata, and `ansible-doc` for every module, filter and role."""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from support.ansible import HERE as SUPPORT
from support.ansible import REPO, read_results

BIN = os.path.dirname(sys.executable)
NAMESPACE, NAME = "dockyard", "images"
FQCN = f"{NAMESPACE}.{NAME}"

# What a user needs, at the top of the tarball: these must be there ...
REQUIRED = (
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "requirements.txt",
    "meta/runtime.yml",
    "meta/execution-environment.yml",
    "plugins/",
    "roles/",
    "playbooks/",
)
# ... and nothing but these may be (docs/: extra docs, LICENSE/COPYING: the licence text).
ALLOWED_TOP = {
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "requirements.txt",
    "bindep.txt",
    "LICENSE",
    "COPYING",
    "meta",
    "plugins",
    "roles",
    "playbooks",
    "docs",
    "changelogs",
}
# Development tooling and its output, at any depth. Molecule scenarios are tests: they stay out too.
TOOLING_DIRS = {
    "hack",
    "benchmarks",
    ".benchmarks",
    "tests",
    "molecule",
    ".venv",
    ".venv-hosts",
    ".tmp",
    ".ansible",
    ".hypothesis",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".ci",
    ".git",
    "layer-report",
}
TOOLING_FILES = {"galaxy.yml", "pyproject.toml", "requirements-dev.txt", ".ansible-lint", ".gitignore"}
TOOLING_SUFFIXES = (".tar.gz", ".pyc")


def _filters_defined() -> list:
    """Every filter name a plugins/filter/*.py returns from FilterModule.filters(), read from the source."""
    names = []
    for path in sorted(glob.glob(os.path.join(REPO, "plugins", "filter", "*.py"))):
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "filters":
                for returned in ast.walk(node):
                    if isinstance(returned, ast.Return) and isinstance(returned.value, ast.Dict):
                        names += [key.value for key in returned.value.keys if isinstance(key, ast.Constant)]
    return sorted(names)


PLUGINS = {
    "module": sorted(
        os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")) if not os.path.basename(path).startswith("_")
    ),
    "filter": _filters_defined(),
    "role": sorted(name for name in os.listdir(os.path.join(REPO, "roles")) if os.path.isdir(os.path.join(REPO, "roles", name))),
}


class Installed:
    """The built tarball, and the fresh collections path it was installed into."""

    def __init__(self, tarball: str, collections: str, work: str):
        self.tarball = tarball
        self.collections = collections
        self.path = os.path.join(collections, "ansible_collections", NAMESPACE, NAME)
        self.work = work
        config = os.path.join(work, "ansible.cfg")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write("[defaults]\n")
        # Built from scratch, not with ansible_env(): only the fresh install dir is a collections path, so
        # neither the source tree's .tmp/collections symlink nor collections found on sys.path can be loaded;
        # an empty ansible.cfg and a private ANSIBLE_HOME keep any other configuration out.
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("ANSIBLE_") and name != "PYTHONPATH"}
        self.env.update(
            {
                "ANSIBLE_CONFIG": config,
                "ANSIBLE_HOME": os.path.join(work, "ansible-home"),
                "ANSIBLE_COLLECTIONS_PATH": collections,
                "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                "ANSIBLE_NOCOLOR": "1",
            }
        )

    def run(self, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [os.path.join(BIN, command[0]), *command[1:]],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=dict(self.env, **(env or {})),
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    work = str(tmp_path_factory.mktemp("installed"))
    dist, collections = os.path.join(work, "dist"), os.path.join(work, "collections")
    build = subprocess.run(
        [os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", dist, REPO],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0 and "WARNING" not in build.stderr, build.stdout + build.stderr
    (tarball,) = glob.glob(os.path.join(dist, f"{NAMESPACE}-{NAME}-*.tar.gz"))
    found = Installed(tarball, collections, work)
    install = ["ansible-galaxy", "collection", "install", tarball, "-p", collections]
    if "--offline" in found.run("ansible-galaxy", "collection", "install", "--help").stdout:
        install.append("--offline")
    done = found.run(*install)
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stdout + done.stderr
    assert os.path.isfile(os.path.join(found.path, "MANIFEST.json")), done.stdout
    return found


def tooling(member: str) -> bool:
    parts = member.rstrip("/").split("/")
    return bool(TOOLING_DIRS.intersection(parts)) or parts[-1] in TOOLING_FILES or member.endswith(TOOLING_SUFFIXES)


def test_the_tarball_carries_what_users_need_and_no_development_tooling(installed):
    with tarfile.open(installed.tarball) as archive:
        members = [member.name + ("/" if member.isdir() else "") for member in archive.getmembers()]
    for needed in REQUIRED:
        assert needed in members, f"{needed} is missing from {os.path.basename(installed.tarball)}"
    # every module and role
    for module in PLUGINS["module"]:
        assert f"plugins/modules/{module}.py" in members
    for role in PLUGINS["role"]:
        assert f"roles/{role}/meta/argument_specs.yml" in members
    # every filter with its documentation (in the .py, or a sidecar .yml), and docs/ when there are some
    shipped = [os.path.join(REPO, "plugins", "filter", pattern) for pattern in ("*.py", "*.yml", "*.yaml")] + [os.path.join(REPO, "docs", "**", "*.*")]
    for path in [path for pattern in shipped for path in glob.glob(pattern, recursive=True)]:
        if "__pycache__" not in path:
            assert os.path.relpath(path, REPO) in members
    unexpected = sorted({member.split("/", 1)[0] for member in members} - ALLOWED_TOP)
    assert not unexpected, f"not for users (add to galaxy.yml build_ignore, or to ALLOWED_TOP if users need it): {unexpected}"
    leaked = sorted(member for member in members if tooling(member))
    assert not leaked, f"development tooling in the tarball (galaxy.yml build_ignore): {leaked}"
    with open(os.path.join(installed.path, "MANIFEST.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["dependencies"]) == (NAMESPACE, NAME, {})


def test_ansible_loads_the_installed_copy_not_the_source_tree(installed):
    listed = installed.run("ansible-galaxy", "collection", "list", FQCN, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert list(json.loads(listed.stdout)) == [os.path.join(installed.collections, "ansible_collections")], listed.stdout
    docs = installed.run("ansible-doc", "-t", "module", "--json", *(f"{FQCN}.{module}" for module in PLUGINS["module"]))
    assert docs.returncode == 0, docs.stderr
    files = {name: entry["doc"]["filename"] for name, entry in json.loads(docs.stdout).items()}
    assert files == {f"{FQCN}.{module}": os.path.join(installed.path, "plugins", "modules", f"{module}.py") for module in PLUGINS["module"]}


QUICK_START = """\
---
# README's quick start ("Pre-warm the next release"), with the images of the test registry in a temporary OCI store.
- name: Pre-warm the next release
  hosts: app_servers
  module_defaults:
    group/dockyard.images.images:
      store: oci
      store_path: {store}
      registry_auth:
        - registry: registry.example.com
          username: deploy
          password: "{{{{ vault_registry_password }}}}"
  tasks:
    - name: Pull the images
      dockyard.images.image_pull:
        name:
          - {registry}/team/app:1
          - {registry}/team/worker:1
          - {registry}/team/oci@{digest}
        policy: missing        # or always: one HEAD per tag, a pull only if it moved

    - name: See what the hosts hold
      dockyard.images.image_facts:

    - name: Print it
      ansible.builtin.debug:
        msg: "{{{{ ansible_facts.dockyard_images | dockyard.images.images_table }}}}"
"""


def recap(stdout: str) -> dict:
    line = next((line for line in stdout.splitlines() if line.startswith("localhost") and "ok=" in line), "")
    assert line, f"no play recap for localhost:\n{stdout}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_readme_quick_start_runs_from_the_installed_copy(installed, registry, corpus, tmp_path):
    store = tmp_path / "oci"
    playbook = tmp_path / "prewarm.yml"
    playbook.write_text(QUICK_START.format(store=store, registry=registry.host, digest=corpus.oci.digest))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"app_servers": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    secrets = tmp_path / "vault.yml"
    secrets.write_text(yaml.safe_dump({"vault_registry_password": "not-used-by-the-test-registry"}))

    def play(results: str) -> tuple:
        recording = {
            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(SUPPORT, "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "record_results",
            "DOCKYARD_TEST_RESULTS": results,
        }
        done = installed.run("ansible-playbook", "-i", str(inventory), "-e", f"@{secrets}", str(playbook), env=recording)
        assert done.returncode == 0, done.stdout + done.stderr
        return done, {entry["task"]: entry for entry in read_results(results)}

    first, tasks = play(str(tmp_path / "first.jsonl"))
    pulled = tasks["Pull the images"]["result"]
    assert pulled["changed"] is True, pulled
    assert sorted(image["id"] for image in pulled["images"]) == sorted(image.id for image in (corpus.app, corpus.worker, corpus.oci))
    assert os.path.isfile(store / "index.json")
    table = tasks["Print it"]["result"]["msg"]
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SHARED", "UNIQUE"]
    assert sorted(row.split()[0] for row in table[1:4]) == sorted(f"{registry.host}/team/{name}" for name in ("app", "oci", "worker")), table
    assert table[-1].startswith("3 images"), table
    assert recap(first.stdout)["failed"] == 0
    assert "WARNING" not in first.stderr, first.stderr

    mark = registry.mark()
    second, tasks = play(str(tmp_path / "second.jsonl"))
    assert registry.requests_since(mark) == [], "policy: missing asks no registry anything when the store holds every image"
    assert tasks["Pull the images"]["result"]["changed"] is False
    assert recap(second.stdout)["changed"] == 0, second.stdout
    assert "WARNING" not in second.stderr, second.stderr


def test_ansible_builder_reads_the_execution_environment_metadata(installed):
    with open(os.path.join(installed.path, "meta", "execution-environment.yml"), encoding="utf-8") as handle:
        metadata = yaml.safe_load(handle)
    assert metadata["version"] == 1
    assert metadata["dependencies"] == {"python": "requirements.txt"}, "no system package is needed: no bindep.txt"
    done = installed.run("ansible-builder", "introspect", installed.collections)
    assert done.returncode == 0, done.stdout + done.stderr
    found = yaml.safe_load(done.stdout)
    python = [line.split("#", 1)[0].strip() for line in found["python"]]
    assert [re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0] for line in python] == ["requests"], found
    assert all(line.endswith(f"# from collection {FQCN}") for line in found["python"]), found
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as handle:
        assert python == [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert found["system"] == [], found


HEADERS = {"module": "> MODULE {} (", "filter": "> FILTER {} (", "role": "> ROLE: *{}* ("}


def complaints(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "WARNING" in line or "ERROR" in line]


def rendered_from(done: subprocess.CompletedProcess, kind: str, name: str) -> str:
    """The path ansible-doc says it rendered `name` from, or "" when it did not render it."""
    header = HEADERS[kind].format(f"{FQCN}.{name}")
    line = next((line for line in done.stdout.splitlines() if line.startswith(header)), "")
    return line[len(header) :].rstrip(")")


@pytest.fixture(scope="module")
def ansible_doc(installed) -> dict:
    """One text-mode ansible-doc per plugin type, each with every plugin of that type, run side by side."""
    with ThreadPoolExecutor(len(PLUGINS)) as pool:
        runs = {kind: pool.submit(installed.run, "ansible-doc", "-t", kind, *(f"{FQCN}.{name}" for name in names)) for kind, names in PLUGINS.items()}
        return {kind: run.result() for kind, run in runs.items()}


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind, names in PLUGINS.items() for name in names], ids=lambda value: value)
def test_ansible_doc_renders_cleanly(installed, ansible_doc, kind, name):
    together = ansible_doc[kind]
    if together.returncode == 0 and not complaints(together.stderr) and rendered_from(together, kind, name).startswith(installed.path):
        return
    # that run failed or complained: run this plugin alone to tell whether it is the one
    alone = installed.run("ansible-doc", "-t", kind, f"{FQCN}.{name}")
    command = f"ansible-doc -t {kind} {FQCN}.{name}"
    assert alone.returncode == 0, f"{command} exited {alone.returncode}:\n{alone.stderr}"
    assert not complaints(alone.stderr), f"{command}:\n" + "\n".join(complaints(alone.stderr))
    source = rendered_from(alone, kind, name)
    assert source, f"{command} rendered nothing for it:\n{alone.stdout[:2000]}"
    assert source.startswith(installed.path), f"{command} read {source}, not the installed copy"
