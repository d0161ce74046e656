"""A fleet of 100 hosts pre-warmed from one registry through a seeded mirror, against community.docker's
docker_image_pull looped per host. Used by benchmarks/run.py (`--only fleet`).

Each host is a local connection with an OCI store of its own. Ours is the prewarm role: the first host
seeds the mirror (a pull-through cache and a writable seed endpoint on its storage) with what the fleet
lacks, then every host pulls through the cache. The peer is the loop a user writes without this
collection, one docker_image_pull per image and host (`pull: not_present`, the cheaper of its two
modes), every host pointed at the benchmark's one Docker Engine: the re-run it is compared on asks
the engine only whether each image is there, so one engine serves the comparison as well as 100.

Its rows, each from ansible-playbook runs with the same forks:
- wall time, cold (once: it writes 100 stores) and for a re-run over the unchanged fleet (alternating
  the sides, medians), ours against the peer;
- per host: the module runs (counted by the interpreter every module starts through), the tasks that
  ran (not skipped), and the controller's CPU seconds (everything ansible-playbook and its workers
  spent, less what the module processes spent);
- upstream blob bytes over unique blob bytes for the cold run;
- where the controller's wall time goes: the slowest tasks of a re-run, from ansible.posix's profile_tasks.
"""

from __future__ import annotations

import json
import re
import resource
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from support.ansible import ansible_env, read_results
from support.engines import DockerEngine
from support.registry import RegistryServer

if TYPE_CHECKING:
    from run import Bench, Corpus

HOSTS = 100
FORKS = 25
PROFILE_LINE = re.compile(r"^(?P<task>.+?) -{3,} (?P<seconds>\d+\.\d+)s$")


class FleetRun:
    """One ansible-playbook run over the fleet, and what it cost: wall seconds, CPU seconds of the controller
    and of the module processes, module runs, tasks run per host, and the slowest tasks."""

    def __init__(self, work: Path, name: str, playbook: Path, inventory: Path, extra: dict):
        self.work, self.name = work, name
        self.times = work / f"{name}-module-times"
        self.results = work / f"{name}-results.jsonl"
        interpreter = work / f"{name}-python"  # the module's python, timed: bash's `times` after it
        interpreter.write_text(f'#!/bin/bash\n"{sys.executable}" "$@"\nstatus=$?\ntimes >> "{self.times}"\nexit $status\n')
        interpreter.chmod(0o755)
        self.command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "-f", str(FORKS), str(playbook), "-e", json.dumps(extra)]
        self.env = ansible_env(
            {
                "ANSIBLE_PYTHON_INTERPRETER": str(interpreter),
                "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).resolve().parent.parent / "tests" / "support" / "callback_plugins"),
                "ANSIBLE_CALLBACKS_ENABLED": "record_results,ansible.posix.profile_tasks",
                "DOCKYARD_TEST_RESULTS": str(self.results),
                "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "8",
            }
        )
        self.figures: list[dict] = []

    def __call__(self) -> None:
        for path in (self.times, self.results):
            path.unlink(missing_ok=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(self.command, env=self.env, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: ansible-playbook failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
        total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        modules = module_cpu(self.times.read_text() if self.times.exists() else "")
        ran = Counter(entry["host"] for entry in read_results(str(self.results)) if entry["status"] != "skipped")
        self.figures.append(
            {
                "controller_cpu": total - modules["cpu"],
                "module_runs": modules["runs"],
                "tasks": sum(ran.values()),
                "slowest": [(m["task"], float(m["seconds"])) for m in map(PROFILE_LINE.match, done.stdout.splitlines()) if m],
            }
        )

    def per_host(self, key: str) -> float:
        return statistics.median(figure[key] for figure in self.figures) / HOSTS


def module_cpu(text: str) -> dict:
    """The module processes' CPU seconds and their number, from bash's `times` after each: two lines of
    user and system time each, the shell's own and its children's (`0m0.012s 0m0.004s`)."""
    seconds = [float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m(\d+(?:\.\d+)?)s", text)]
    return {"cpu": sum(seconds), "runs": len(seconds) // 4}


def fleet(bench: Bench, registry: RegistryServer, corpus: Corpus, engine: DockerEngine, timed_blob_bytes) -> None:
    """`timed_blob_bytes(registry, action)`: the seconds `action` took and the blob bytes `registry` served meanwhile."""
    storage = str(bench.work / "mirror-storage")  # the cache and its seed endpoint share it
    mirror = RegistryServer(str(bench.work / "mirror"), proxy={"remoteurl": registry.url}, storage=storage).start()
    seed = RegistryServer(str(bench.work / "seed"), storage=storage).start()
    try:
        work = bench.work / "fleet"
        work.mkdir()
        hosts = {f"host{n:03d}": {"ansible_connection": "local", "prewarm_store_path": str(work / "stores" / f"host{n:03d}")} for n in range(1, HOSTS + 1)}
        inventory = work / "fleet.json"
        inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
        ours_playbook = work / "prewarm.yml"
        ours_playbook.write_text(json.dumps([{"name": "Pre-warm", "hosts": "all", "gather_facts": False, "roles": ["dockyard.images.prewarm"]}]))
        peer_playbook = work / "peer.yml"
        peer_pull = {"name": "{{ item }}", "pull": "not_present", "docker_host": engine.docker_host}
        peer_task = {"community.docker.docker_image_pull": peer_pull, "loop": corpus.names}
        peer_playbook.write_text(json.dumps([{"name": "Pull", "hosts": "all", "gather_facts": False, "tasks": [peer_task]}]))
        extra = {
            "prewarm_images": corpus.names,
            "prewarm_store": "oci",
            "prewarm_mirrors": {registry.host: [mirror.url]},
            "prewarm_seed": True,
            "prewarm_seed_registries": {registry.host: seed.url},
        }
        ours_cold = FleetRun(work, "ours-cold", ours_playbook, inventory, extra)
        peer_cold = FleetRun(work, "peer-cold", peer_playbook, inventory, {})
        ours = FleetRun(work, "ours", ours_playbook, inventory, extra)
        peer = FleetRun(work, "peer", peer_playbook, inventory, {})

        cold_seconds, upstream = timed_blob_bytes(registry, ours_cold)
        peer_cold_seconds, _peer_bytes = timed_blob_bytes(registry, peer_cold)

        def nothing():
            """The fleet is unchanged: nothing to prepare."""

        label = f"fleet of {HOSTS} hosts, {FORKS} forks"
        bench.record(
            f"{label}, cold through a seeded mirror: prewarm role (wall time)",
            f"{cold_seconds:.1f} s; {ours_cold.per_host('module_runs'):.2f} module runs, {ours_cold.per_host('tasks'):.1f} tasks"
            f" and {ours_cold.per_host('controller_cpu'):.2f} controller CPU s per host",
            "",
        )
        bench.record(
            f"{label}, cold: docker_image_pull loop into one Docker Engine (wall time)",
            f"{peer_cold_seconds:.1f} s; {peer_cold.per_host('module_runs'):.2f} module runs, {peer_cold.per_host('tasks'):.1f} tasks"
            f" and {peer_cold.per_host('controller_cpu'):.2f} controller CPU s per host",
            "",
        )
        bench.record(f"{label}, cold: upstream blob bytes / unique blob bytes", f"{upstream / corpus.unique_bytes:.2f}", "1.00")
        bench.compare(
            f"{label}, re-run over the unchanged fleet",
            "<= 0.3x community.docker, 1 module run per host",
            [("prewarm role", nothing, ours), ("docker_image_pull loop", nothing, peer)],
            f"{len(corpus.names)} images per host",
        )
        for side, run in (("prewarm role", ours), ("docker_image_pull loop", peer)):
            bench.record(
                f"{label}, unchanged re-run per host: {side}",
                f"{run.per_host('module_runs'):.2f} module runs, {run.per_host('tasks'):.1f} tasks, {run.per_host('controller_cpu'):.3f} controller CPU s",
                "1 module run" if run is ours else "",
            )
        slowest = ours.figures[-1]["slowest"][:4]
        bench.record(f"{label}, unchanged re-run: the prewarm role's slowest tasks", "; ".join(f"{task} {seconds:.2f} s" for task, seconds in slowest), "")
    finally:
        seed.stop()
        mirror.stop()
