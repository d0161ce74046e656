"""The main job, end to end: a throwaway local registry seeded with sample images that share
base layers, pre-warmed into the embedded OCI store by playbooks/prewarm.yml, then the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.ansible import ansible_env  # noqa: E402
from support.images import Image, Index, Pusher, random_layer  # noqa: E402
from support.registry import RegistryServer  # noqa: E402

OCI = "application/vnd.oci.image.manifest.v1+json"


def seed(registry: RegistryServer) -> list:
    """Push sample images: a shared OS base, a shared runtime, and an app per service."""
    base = random_layer(3_000_000, "demo-os-base")
    runtime = random_layer(5_000_000, "demo-python-runtime")
    pusher = Pusher(registry.url)
    images = {
        "demo/base:12": Image([base]),
        "demo/web:1.4": Image([base, random_layer(1_500_000, "demo-web")]),
        "demo/api:2.0": Image([base, runtime, random_layer(800_000, "demo-api")]),
        "demo/worker:2.0": Image([base, runtime, random_layer(600_000, "demo-worker")]),
    }
    for name, image in images.items():
        repo, tag = name.split(":")
        pusher.image(repo, tag, image)
    tools = Index([Image([base, random_layer(400_000, f"demo-tools-{arch}")], architecture=arch, media_type=OCI) for arch in ("amd64", "arm64")])
    pusher.index("demo/tools", "latest", tools)
    return [f"{registry.host}/{name}" for name in [*list(images), "demo/tools:latest"]]


def main() -> int:
    work = tempfile.mkdtemp(prefix="dockyard-demo-")
    registry = RegistryServer(os.path.join(work, "registry")).start()
    try:
        images = seed(registry)
        print(f"Local registry at {registry.url} with {len(images)} sample images; store at {work}/store\n", flush=True)
        extra = {
            "prewarm_images": images,
            "prewarm_store": "oci",
            "prewarm_store_path": os.path.join(work, "store"),
            "layer_report_dir": os.path.join(work, "report"),
        }
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local"]
        command += [os.path.join(REPO, "playbooks", "prewarm.yml"), "-e", json.dumps(extra)]
        return subprocess.call(command, env=ansible_env())
    finally:
        registry.stop()


if __name__ == "__main__":
    sys.exit(main())
