"""Run the collection's modules through ansible against localhost and return their JSON results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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


def run_module(module: str, args: dict, check: bool = False, diff: bool = False, env: Optional[dict] = None) -> dict:
    """Run dockyard.images.<module> once on localhost; return its result dict."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "ansible"),
        "localhost",
        "-c",
        "local",
        "-i",
        "localhost,",
        "-m",
        f"dockyard.images.{module}",
        "-a",
        json.dumps(args),
    ]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as results:
        done = subprocess.run(command, capture_output=True, text=True, env=recording_env(results.name, env), timeout=900, check=False)
        recorded = read_results(results.name)
    if not recorded:
        raise AssertionError(f"ansible recorded no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = recorded[0]["result"]
    result["failed"] = recorded[0]["status"] == "failed"
    result["_stdout"] = done.stdout
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
