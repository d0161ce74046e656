"""Other tools read our store: skopeo inspects and copies images straight out of the OCI layout."""

from __future__ import annotations

import json
import subprocess

from support.ansible import run_module


def skopeo(*args):
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_skopeo_inspects_and_copies_images_from_our_store(registry, corpus, store, tmp_path):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/oci:1", f"{registry.host}/team/multi:1"]
    run_module("image_pull", {"name": names, "store_path": store, "platform": "linux/amd64"})

    inspected = json.loads(skopeo("inspect", f"oci:{store}:{registry.host}/team/app:1"))
    assert inspected["Layers"] == [layer.digest for layer in corpus.app.layers]
    assert inspected["Architecture"] == "amd64"
    assert inspected["Created"].startswith("2026-01-02T03:04:05")

    config = json.loads(skopeo("inspect", "--config", f"oci:{store}:{registry.host}/team/multi:1"))
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in corpus.amd64.layers]

    target = tmp_path / "copy"
    skopeo("copy", f"oci:{store}:{registry.host}/team/oci:1", f"dir:{target}")
    copied = json.loads((target / "manifest.json").read_bytes())
    assert [layer["digest"] for layer in copied["layers"]] == [layer.digest for layer in corpus.oci.layers]
    assert (target / corpus.oci.layers[0].digest.split(":")[1]).read_bytes() == corpus.oci.layers[0].blob


def test_images_skopeo_wrote_are_listed_by_image_facts(registry, corpus, store):
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/team/oci:1", f"oci:{store}:latest")
    facts = run_module("image_facts", {"store_path": store})
    assert [image["id"] for image in facts["images"]] == [corpus.oci.id]
    assert facts["images"][0]["reference"] is None and facts["images"][0]["tag"] == "latest"
