"""Synthetic fleets for the layer report's tests: image facts as dockyard.images.image_facts sets them,
for 10 and 1,000 hosts made of a few groups of identical hosts plus outliers."""

from __future__ import annotations

import hashlib

REGISTRY = "registry.example.com/team"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _layer(name: str, size: int) -> dict:
    return {"digest": _digest(f"layer {name}"), "size": size}


BASE, PYTHON, POSTGRES = _layer("debian", 29_000_000), _layer("python", 18_000_000), _layer("postgres", 41_000_000)


def image(name: str, layers: list, version: str = "") -> dict:
    """One image of the facts; `version` gives the same reference another id (a tag that moved)."""
    own = _layer(f"{name}{version}", 1_000_000 + 97_000 * len(name))
    layers = [*layers, own]
    return {"reference": f"{REGISTRY}/{name}", "id": _digest(f"image {name}{version}"), "size": sum(layer["size"] for layer in layers) + 1500, "layers": layers}


IMAGES = {
    "web:1.4": image("web:1.4", [BASE, PYTHON]),
    "api:2.0": image("api:2.0", [BASE, PYTHON]),
    "api:1.9": image("api:1.9", [BASE, PYTHON]),
    "tools:latest": image("tools:latest", [BASE]),
    "metrics:1": image("metrics:1", [BASE]),
    "db:16": image("db:16", [BASE, POSTGRES]),
    "backup:3": image("backup:3", [BASE, POSTGRES]),
    "worker:2.0": image("worker:2.0", [BASE, PYTHON]),
    "batch:5": image("batch:5", [BASE, PYTHON]),
    "debug:latest": image("debug:latest", [BASE]),
    "cache:7": image("cache:7", [BASE]),
}
WEB = ["web:1.4", "api:2.0", "tools:latest", "metrics:1"]
DB = ["db:16", "backup:3", "metrics:1"]
BATCH = ["worker:2.0", "batch:5", "tools:latest"]


def _facts(names: list, moved: tuple = ()) -> dict:
    images = [image(name, IMAGES[name]["layers"][:-1], version="-moved") if name in moved else IMAGES[name] for name in names]
    return {"store": {"type": "oci", "path": "/var/lib/dockyard/oci"}, "images": images}


def fleet_of_1000() -> dict:
    """990 hosts in three groups (500 web, 300 db, 190 batch) and 10 outliers in 6 groups."""
    facts = {f"web-{n:04d}": _facts(WEB) for n in range(1, 501)}
    facts.update({f"db-{n:03d}": _facts(DB) for n in range(1, 301)})
    facts.update({f"batch-{n:03d}": _facts(BATCH) for n in range(1, 191)})
    facts.update({f"web-{n:04d}": _facts(WEB[:3]) for n in range(501, 505)})  # 4 hosts lack metrics:1
    facts["web-0505"] = _facts(["web:1.4", "api:1.9", "tools:latest", "metrics:1"])  # an old api instead of api:2.0
    facts["web-0506"] = _facts(WEB, moved=("api:2.0",))  # api:2.0 under another id
    facts.update({f"db-{n:03d}": _facts([*DB, "debug:latest"]) for n in (301, 302)})  # 2 hosts with an extra image
    facts["batch-191"] = _facts(["tools:latest", "cache:7"])  # lacks worker and batch, has cache
    facts["batch-192"] = {"store": {"type": "oci"}, "images": []}  # an empty store
    return facts


def fleet_of_10() -> dict:
    """5 web hosts, 3 db hosts, a web host that lacks an image and a lone batch host."""
    facts = {f"web-{n:02d}": _facts(WEB) for n in range(1, 6)}
    facts.update({f"db-{n:02d}": _facts(DB) for n in range(1, 4)})
    facts["web-06"] = _facts(["web:1.4", "api:2.0", "metrics:1"])
    facts["batch-01"] = _facts(BATCH)
    return facts
