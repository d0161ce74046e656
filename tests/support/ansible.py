"""Run the collection's modules through ansible against localhost and return their JSON results."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".tmp", "collections")
HERE = os.path.dirname(os.path.abspath(__file__))


def ensure_collection_path() -> str:
    """Make the repository importable as ansible_collections.dockyard.images."""
    link = os.path.join(COLLECTIONS, "ansible_collections", "dockyard", "images")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    return COLLECTIONS


def ansible_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": ensure_collection_path(),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "ANSIBLE_CONNECTION_PLUGINS": os.path.join(HERE, "connection_plugins"),  # the test connections, beside Ansible's
        }
    )
    env.update(extra or {})
    return env


def recording_env(results_path: str, extra: Optional[dict] = None) -> dict:
    """ansible_env plus a callback that writes every task result to `results_path`."""
    recording = {
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HERE, "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "record_results",
        "DOCKYARD_TEST_RESULTS": results_path,
    }
    return ansible_env(dict(extra or {}, **recording))


def read_results(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def hosts_file(hosts: dict, directory: str) -> str:
    """A copy of /etc/hosts in `directory` where each name of `hosts` resolves to the address given, and only there."""
    names = set(hosts)
    with open("/etc/hosts", encoding="utf-8") as handle:
        kept = [line for line in handle if not names & set(line.split("#", 1)[0].split()[1:])]
    path = os.path.join(directory, "hosts")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(kept)
        handle.writelines(f"{address} {name}\n" for name, address in hosts.items())
    return path


def with_hosts(command: list, hosts_path: str) -> list:
    """`command` in a private mount namespace whose /etc/hosts is `hosts_path` (needs root)."""
    return ["unshare", "--mount", "sh", "-c", 'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", hosts_path, *command]


def kill_tree(pid: int) -> None:
    """SIGKILL the process `pid` and every process it started, Ansible's workers included (each calls setsid,
    so killing the process group would leave them running)."""
    found = [pid]
    for parent in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGSTOP)  # no new children while the tree is read
        found.extend(child for child in _children(parent) if child not in found)
    for each in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def _children(pid: int) -> list:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def _run_limited(command: list, env: dict, kill_after: float):
    """subprocess.run in its own process group, killed whole (module processes too) after `kill_after` seconds."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        stdout, stderr = process.communicate()
        raise AssertionError(f"ansible was still running after {kill_after} s and was killed:\n{stdout[-2000:]}\n{stderr[-2000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def ansible_command(module: str, args: dict, check: bool = False, diff: bool = False, connection: str = "local") -> list:
    """The ansible command line that runs dockyard.images.<module> once on localhost over `connection` (one of
    Ansible's, or of support/connection_plugins)."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "ansible"),
        "localhost",
        "-c",
        connection,
        "-i",
        "localhost,",
        "-m",
        f"dockyard.images.{module}",
        "-a",
        json.dumps(args),
    ]
    return command + (["--check"] if check else []) + (["--diff"] if diff else [])


def run_module(
    module: str,
    args: dict,
    check: bool = False,
    diff: bool = False,
    env: Optional[dict] = None,
    hosts: Optional[dict] = None,
    kill_after: Optional[float] = None,
) -> dict:
    """Run dockyard.images.<module> once on localhost; return its result dict.

    `hosts` ({"vm": "127.0.0.2"}) makes those names resolve, for the ansible process and the module only.
    `kill_after` kills the whole process group after that many seconds and fails the test.
    The result also carries `_stdout`, `_stderr` and `_elapsed` (wall-clock seconds of the ansible process).
    """
    command = ansible_command(module, args, check, diff)
    with tempfile.TemporaryDirectory() as work, tempfile.NamedTemporaryFile(suffix=".jsonl") as results:
        if hosts:
            command = with_hosts(command, hosts_file(hosts, work))
        started = time.monotonic()
        if kill_after is None:
            done = subprocess.run(command, capture_output=True, text=True, env=recording_env(results.name, env), timeout=900, check=False)
        else:
            done = _run_limited(command, recording_env(results.name, env), kill_after)
        elapsed = time.monotonic() - started
        recorded = read_results(results.name)
    if not recorded:
        raise AssertionError(f"ansible recorded no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = recorded[0]["result"]
    result["failed"] = recorded[0]["status"] == "failed"
    result["_stdout"] = done.stdout
    result["_stderr"] = done.stderr
    result["_elapsed"] = elapsed
    return result


def run_playbook(playbook: str, extra_vars: Optional[dict] = None, env: Optional[dict] = None, args: Optional[list] = None) -> tuple:
    """Run a playbook; return the finished process and every task result it recorded."""
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    command += args or []
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as results:
        done = subprocess.run(command, capture_output=True, text=True, env=recording_env(results.name, env), timeout=900, check=False)
        return done, read_results(results.name)
