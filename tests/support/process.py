"""Run a module file as its own process and measure its peak memory."""

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
sys.stdout.flush()  # the text layer buffers: without PYTHONUNBUFFERED the figure would follow the output
sys.stdout.buffer.write(output)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def module_command(module: str, args: dict, tmp_path) -> tuple:
    """(argv, env) that run a module file as its own process, as Ansible would with its arguments."""
    args_file = tmp_path / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=ensure_collection_path())
    return [sys.executable, os.path.join(REPO, "plugins", "modules", f"{module}.py"), str(args_file)], env


def run_module_process(module: str, args: dict, tmp_path) -> tuple:
    """Run a module file as its own process; return (result, peak RSS in bytes) of that process."""
    command, env = module_command(module, args, tmp_path)
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    peak, output = done.stdout.split(b"\n", 1)
    return json.loads(output), int(peak)
