"""Pulling a large layer streams it to disk: the module's memory does not grow with the layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support.ansible import REPO, ensure_collection_path

# A small launcher measures the module: a process forked from this large test process would
# start with the test's own pages counted in its peak RSS.
_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
output = process.stdout.read()
_, status, usage = os.wait4(process.pid, 0)
sys.stdout.write(str(usage.ru_maxrss * 1024) + chr(10))
sys.stdout.buffer.write(output)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_module_process(module: str, args: dict, tmp_path) -> tuple:
    """Run a module file as its own process; return (result, peak RSS in bytes) of that process."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=ensure_collection_path())
    module_path = os.path.join(REPO, "plugins", "modules", f"{module}.py")
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, module_path, str(args_file)], capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    peak, output = done.stdout.split(b"\n", 1)
    return json.loads(output), int(peak)


def test_a_64_mib_layer_is_pulled_without_holding_it_in_memory(registry, big_image, store, tmp_path):
    layer = big_image.layers[0]
    result, peak = run_module_process("image_pull", {"name": [f"{registry.host}/team/big:1"], "store_path": store}, tmp_path)
    assert result["downloaded_bytes"] == layer.size > 64 * 1024 * 1024
    print(f"peak RSS {peak / 2**20:.1f} MiB")
    assert peak < layer.size, f"peak RSS {peak / 2**20:.0f} MiB while pulling a {layer.size / 2**20:.0f} MiB layer"
