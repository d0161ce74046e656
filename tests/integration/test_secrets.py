"""The secrets scan: the authenticated scenarios of the integration suite, run through ansible at
verbosity 3 (`-vvv`), must leave no password, no base64 `user:password` and no bearer token in any
output, recorded result or file left behind. Only the docker config and the playbook inputs hold a
secret, by design; the store, temp files, logs and ~/.ansible/tmp must not.

A failure names which secret appeared where; it never prints the secret itself."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
import requests
import yaml

from support.ansible import read_results, recording_env, run_playbook
from support.images import Image, Pusher, make_layer
from support.registry import PASSWORD, USER
from support.token_issuer import SERVICE

# Not a prefix or suffix of PASSWORD, so a leak of one is never reported as the other.
WRONG_PASSWORD = "wrong-" + uuid.uuid4().hex[:12]
# What AnsibleModule puts in invocation.module_args in place of a no_log value.
MASKS = ("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", "********")
# What -vvv adds to the output of a local connection; its absence means verbosity did not apply.
VERBOSE_MARK = "ESTABLISH LOCAL CONNECTION"


def base64_forms(name: str, text: str) -> dict:
    """Standard and urlsafe base64, without padding so that padded and unpadded copies both match."""
    raw = text.encode()
    return {
        f"base64({name})": base64.b64encode(raw).decode().rstrip("="),
        f"base64url({name})": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def ansible_temp_dirs() -> set:
    """Where ansible keeps its controller and remote temp dirs for this user (default ~/.ansible/tmp)."""
    found = {os.environ.get("ANSIBLE_REMOTE_TMP", "~/.ansible/tmp"), os.environ.get("ANSIBLE_LOCAL_TEMP", "~/.ansible/tmp")}
    return {os.path.expanduser(path) for path in found}


def ansible_temp_entries() -> set:
    entries = set()
    for base in ansible_temp_dirs():
        if os.path.isdir(base):
            entries.update(os.path.join(base, name) for name in os.listdir(base))
    return entries


def owner_alive(path: str) -> bool:
    """True when a temp entry belongs to an ansible process that is still running (not a leftover).

    `ansible-tmp-<time>-<pid>-<random>` (remote tmp) and `ansible-local-<pid><8 random>` (controller
    tmp) name their process. Every ansible process of a scan has exited before it looks, so a live
    owner is some other, concurrent run whose files are still in use."""
    name = os.path.basename(path)
    match = re.fullmatch(r"ansible-tmp-[0-9.]+-(\d+)-\d+", name) or re.fullmatch(r"ansible-local-(\d+)[a-z0-9_]{8}", name)
    if not match:
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def files_under(root: str, exclude: tuple = ()) -> list:
    """Every regular file under root (root itself when it is a file), outside the excluded dirs."""
    if os.path.isfile(root) and not os.path.islink(root):
        return [root]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in exclude]
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
    return found


def find_secrets(secrets: dict, texts: list, files: list, root: str = "") -> list:
    """Which secret (by name) appears where. texts: (where, str); files: paths, named relative to root."""
    needles = {name: value.encode() for name, value in secrets.items() if value}
    found = []
    for where, text in texts:
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        found += [f"{name} in {where}" for name, needle in needles.items() if needle in data]
    for path in files:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:  # removed while we looked: not left behind
            continue
        where = f"file {os.path.relpath(path, root)}" if root and path.startswith(root + os.sep) else f"file {path}"
        found += [f"{name} in {where}" for name, needle in needles.items() if needle in data]
    return found


def redact(text: str, secrets: dict) -> str:
    for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
        if value:
            text = text.replace(value, f"<{name}>")
    return text


class SecretsScan:
    """Runs ansible for one test and collects everything the scan must look at."""

    def __init__(self, root, issuer):
        self.root = str(root)
        self.inputs = os.path.join(self.root, "inputs")  # docker config, playbook: secrets by design, not scanned
        self.results_dir = os.path.join(self.root, "results")  # scanned as "recorded results of ..."
        self.tmpdir = os.path.join(self.root, "tmpdir")  # TMPDIR of ansible and the module: scanned
        for folder in (self.inputs, self.results_dir, self.tmpdir):
            os.makedirs(folder)
        self.issuer = issuer
        self.token_mark = len(issuer.issued_tokens())
        self.temp_before = ansible_temp_entries()
        self.texts = []  # (where, text)
        self.invocations = []  # (label, invocation.module_args or None, whether credentials were passed)
        self.runs = 0

    def extra_env(self) -> dict:
        """Verbosity 3, and every file ansible or the module writes (log, temp files) where the scan looks."""
        return {
            "ANSIBLE_VERBOSITY": "3",
            "ANSIBLE_KEEP_REMOTE_FILES": "0",
            "ANSIBLE_LOG_PATH": os.path.join(self.root, "ansible.log"),
            "TMPDIR": self.tmpdir,
        }

    def tokens(self) -> list:
        return self.issuer.issued_tokens()[self.token_mark :]

    def secrets(self) -> dict:
        found = {"password": PASSWORD, "wrong password": WRONG_PASSWORD}
        found.update(base64_forms("user:password", f"{USER}:{PASSWORD}"))
        found.update(base64_forms("user:wrong password", f"{USER}:{WRONG_PASSWORD}"))
        found.update(base64_forms("password", PASSWORD))
        for number, token in enumerate(self.tokens(), 1):
            found[f"bearer token #{number}"] = token
            found[f"signature of bearer token #{number}"] = token.rsplit(".", 1)[-1]
        return found

    def redacted(self, value) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str, indent=1)
        return redact(text, self.secrets())

    def expect(self, condition: bool, what: str, result) -> None:
        """A scenario check whose failure shows the result with every secret replaced by its name."""
        if not condition:
            pytest.fail(f"{what}:\n{self.redacted(result)}", pytrace=False)

    def _record(self, label: str, done, recorded: list, raw: str, credentials: bool) -> None:
        self.texts += [(f"stdout of {label}", done.stdout), (f"stderr of {label}", done.stderr), (f"recorded results of {label}", raw)]
        if VERBOSE_MARK not in done.stdout:
            pytest.fail(f"{label}: no -vvv output, the scan would be blind:\n{self.redacted(done.stdout + done.stderr)}", pytrace=False)
        if not recorded:
            pytest.fail(f"{label}: ansible recorded no result (exit {done.returncode}):\n{self.redacted(done.stdout + done.stderr)}", pytrace=False)
        for entry in recorded:
            invocation = entry["result"].get("invocation", {}).get("module_args")
            self.invocations.append((f"{label} (task {entry['task']!r})", invocation, credentials))

    def module(self, label: str, module: str, args: dict, check: bool = False) -> dict:
        """Run dockyard.images.<module> through `ansible` at verbosity 3; return its recorded result."""
        self.runs += 1
        results_path = os.path.join(self.results_dir, f"{self.runs:02d}.jsonl")
        command = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-c", "local", "-i", "localhost,"]
        command += ["-m", f"dockyard.images.{module}", "-a", json.dumps(args)] + (["--check"] if check else [])
        env = recording_env(results_path, self.extra_env())
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
        raw = ""
        if os.path.exists(results_path):
            with open(results_path, encoding="utf-8") as handle:
                raw = handle.read()
        recorded = read_results(results_path) if raw else []
        self._record(label, done, recorded, raw, credentials="registry_auth" in args)
        result = dict(recorded[0]["result"], failed=recorded[0]["status"] == "failed")
        return result

    def playbook(self, label: str, tasks: list, extra_vars: dict) -> list:
        """Run a play on localhost through `ansible-playbook -vvv`; return its recorded results."""
        path = os.path.join(self.inputs, "play.yml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}], handle)
        env = self.extra_env()
        env.pop("ANSIBLE_VERBOSITY")  # -vvv on the command line instead
        done, recorded = run_playbook(path, extra_vars, env=env, args=["-i", "localhost,", "-vvv"])
        self._record(label, done, recorded, json.dumps(recorded, default=str), credentials=True)
        return recorded

    def leaks(self) -> list:
        """Every (secret name, place) found, plus every invocation that shows a password unmasked."""
        secrets = self.secrets()
        texts = list(self.texts)
        problems = []
        for label, invocation, credentials in self.invocations:
            if invocation is None:
                if credentials:
                    problems.append(f"no invocation.module_args in the result of {label}, so the masking cannot be checked")
                continue
            texts.append((f"invocation.module_args of {label}", json.dumps(invocation)))
            auth = invocation.get("registry_auth")
            entries = [] if auth is None or auth in MASKS else auth
            if credentials and auth is None:
                problems.append(f"invocation.module_args of {label} has no registry_auth")
            for index, entry in enumerate(entries):
                password = entry.get("password") if isinstance(entry, dict) else entry
                if password not in MASKS:
                    problems.append(f"invocation.module_args.registry_auth[{index}].password of {label} is not masked")
        exclude = (self.inputs, self.results_dir)
        files = files_under(self.root, exclude)
        left_behind = sorted(path for path in ansible_temp_entries() - self.temp_before if not owner_alive(path))
        for entry in left_behind:
            files += files_under(entry)
        return problems + find_secrets(secrets, texts, files, self.root)

    def assert_clean(self) -> None:
        found = self.leaks()
        assert not found, "secrets scan: " + "; ".join(found)


@pytest.fixture
def scan(tmp_path, token_registry):
    return SecretsScan(tmp_path, token_registry.issuer)


def auth_for(*servers, password: str = PASSWORD) -> list:
    return [{"registry": server.host, "username": USER, "password": password} for server in servers]


def oci(scan, name: str) -> dict:
    return {"store": "oci", "store_path": os.path.join(scan.root, name)}


@pytest.mark.parametrize("which", ["tls_registry", "token_registry"])
def test_a_pull_with_task_credentials_leaks_nothing(request, which, scan, corpus, ca_file):
    server = request.getfixturevalue(which)
    args = dict(oci(scan, "store"), name=[f"{server.host}/team/app:1"], registry_auth=auth_for(server), ca_path=ca_file)
    predicted = scan.module(f"{which} pull (check mode)", "image_pull", args, check=True)
    scan.expect(predicted["changed"] is True and not predicted["failed"], "check mode predicts a pull", predicted)
    pulled = scan.module(f"{which} pull", "image_pull", args)
    scan.expect(pulled["changed"] is True and pulled["images"][0]["digest"] == corpus.app.digest, "the pull happens", pulled)
    if which == "token_registry":
        scan.expect(bool(scan.tokens()), "the token flow issued tokens to look for", pulled)
    scan.assert_clean()


def test_a_pull_with_credentials_from_a_docker_config_leaks_nothing(scan, tls_registry, token_registry, corpus, ca_file):
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = os.path.join(scan.inputs, "docker", "config.json")
    os.makedirs(os.path.dirname(config))
    with open(config, "w", encoding="utf-8") as handle:
        json.dump({"auths": {f"https://{tls_registry.host}": {"auth": encoded}, token_registry.host: {"auth": encoded}}}, handle)
    names = [f"{tls_registry.host}/team/app:1", f"{token_registry.host}/team/app:1"]
    args = dict(oci(scan, "store"), name=names, docker_config=config, ca_path=ca_file)
    predicted = scan.module("docker_config pull (check mode)", "image_pull", args, check=True)
    scan.expect(predicted["changed"] is True and not predicted["failed"], "check mode predicts a pull", predicted)
    pulled = scan.module("docker_config pull", "image_pull", args)
    scan.expect(pulled["changed"] is True and [i["digest"] for i in pulled["images"]] == [corpus.app.digest] * 2, "both pulls happen", pulled)
    scan.assert_clean()


@pytest.mark.parametrize("which", ["tls_registry", "token_registry"])
def test_a_pull_with_a_wrong_password_fails_and_leaks_nothing(request, which, scan, ca_file):
    server = request.getfixturevalue(which)
    args = dict(oci(scan, "store"), name=[f"{server.host}/team/app:1"], registry_auth=auth_for(server, password=WRONG_PASSWORD), ca_path=ca_file)
    refused = scan.module(f"{which} pull with a wrong password", "image_pull", args)
    scan.expect(refused["failed"] and refused.get("reason") == "unauthorized", "a wrong password is unauthorized", refused)
    scan.assert_clean()


def test_remote_facts_with_credentials_leak_nothing(scan, tls_registry, token_registry, corpus, ca_file):
    names = [f"{tls_registry.host}/team/app:1", f"{token_registry.host}/team/app:1"]
    args = dict(oci(scan, "store"), name=names, remote=True, registry_auth=auth_for(tls_registry, token_registry), ca_path=ca_file)
    facts = scan.module("remote image_facts", "image_facts", args)
    scan.expect(not facts["failed"] and [i["digest"] for i in facts["images"]] == [corpus.app.digest] * 2, "remote facts of both", facts)
    scan.assert_clean()


def test_a_copy_between_two_authenticated_registries_leaks_nothing(scan, tls_registry, token_registry, corpus, ca_file):
    # A fresh repository and layer, so the copy really uploads (POST, PUT at Location) into the TLS registry.
    repository = f"secrets/copy-{uuid.uuid4().hex[:8]}"
    image = Image([corpus.base, make_layer({"secrets/copy.txt": repository.encode()})])
    scope = f"repository:{repository}:push,pull"
    token = requests.get(token_registry.issuer.realm, params={"service": SERVICE, "scope": scope}, auth=(USER, PASSWORD), timeout=10).json()["token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    Pusher(token_registry.url, session).image(repository, "1", image)
    args = {
        "name": [f"{token_registry.host}/{repository}:1"],
        "destination": f"https://{tls_registry.host}",
        "registry_auth": auth_for(token_registry, tls_registry),
        "ca_path": ca_file,
    }
    copied = scan.module("image_copy token registry to TLS registry", "image_copy", args)
    scan.expect(copied["changed"] is True and not copied["failed"], "the copy happens", copied)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"}
    served = requests.get(f"{tls_registry.url}/v2/{repository}/manifests/1", auth=(USER, PASSWORD), verify=ca_file, timeout=10, headers=accept)
    scan.expect(served.headers.get("Docker-Content-Digest") == image.digest, "the TLS registry holds the copy", copied)
    scan.assert_clean()


@pytest.mark.parametrize("which", ["tls_registry", "token_registry"])
def test_a_catalog_search_with_credentials_leaks_nothing(request, which, scan, ca_file):
    server = request.getfixturevalue(which)
    args = {"term": "team", "registry": server.host, "registry_auth": auth_for(server), "ca_path": ca_file, "list_tags": True}
    found = scan.module(f"{which} catalog search", "image_search", args)
    names = [entry.get("name") for entry in found.get("results", [])]
    scan.expect(not found["failed"] and "team/app" in names, "the catalog search finds team/app", found)
    scan.assert_clean()


def test_a_playbook_run_with_vvv_leaks_nothing(scan, tls_registry, token_registry, corpus, ca_file):
    names = [f"{tls_registry.host}/team/app:1", f"{token_registry.host}/team/app:1"]
    common = dict(oci(scan, "store"), name=names, ca_path=ca_file, registry_auth="{{ registry_auth }}")
    tasks = [
        {"name": "predict", "dockyard.images.image_pull": common, "check_mode": True},
        {"name": "pull", "dockyard.images.image_pull": common},
        {"name": "pull again, resolving the tags", "dockyard.images.image_pull": dict(common, policy="always")},
        {"name": "inspect remotely", "dockyard.images.image_facts": dict(common, remote=True)},
    ]
    recorded = scan.playbook("ansible-playbook -vvv", tasks, {"registry_auth": auth_for(tls_registry, token_registry)})
    statuses = [(entry["task"], entry["status"], entry["result"].get("changed")) for entry in recorded]
    expected = [("predict", "ok", True), ("pull", "ok", True), ("pull again, resolving the tags", "ok", False), ("inspect remotely", "ok", False)]
    scan.expect(statuses == expected, "the play predicts, pulls, re-resolves and inspects", recorded)
    scan.assert_clean()


def test_the_scan_names_a_planted_secret_and_where_without_printing_it(tmp_path):
    """The scanner itself can fail: a secret in a file or an output is named, its value is not."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "index.json").write_bytes(b'{"note": "' + base64.b64encode(f"{USER}:{PASSWORD}".encode()) + b'"}')
    (tmp_path / "clean.txt").write_text("nothing here")
    secrets = dict(base64_forms("user:password", f"{USER}:{PASSWORD}"), password=PASSWORD, token="eyJ.abc.def-signature")
    found = find_secrets(secrets, [("stdout of x", f"Bearer {secrets['token']}"), ("stderr of x", "")], files_under(str(tmp_path)), str(tmp_path))
    assert found == ["token in stdout of x", "base64(user:password) in file store/index.json", "base64url(user:password) in file store/index.json"]
    message = "; ".join(found)
    assert all(value not in message for value in secrets.values())
    assert redact(f"x {PASSWORD} y", secrets) == "x <password> y"
