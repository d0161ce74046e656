"""The OCI layout store on its own: atomic records, one descriptor per tag and platform, partials."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Manifest
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import REF_NAME, OciStore, oci_manifest

REF = parse_reference("example.com/app:1")


def descriptor(digest_char, arch="amd64", ref=REF):
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + digest_char * 64,
        "size": 10,
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {REF_NAME: ref.canonical},
    }


def test_a_new_store_is_a_valid_layout(tmp_path):
    store = OciStore(str(tmp_path / "s"))
    store.ensure_layout()
    assert json.loads((tmp_path / "s" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((tmp_path / "s" / "index.json").read_text())["manifests"] == []
    assert (tmp_path / "s" / "blobs" / "sha256").is_dir()


def test_record_keeps_one_descriptor_per_tag_and_platform(tmp_path):
    store = OciStore(str(tmp_path))
    assert store.record([(REF, descriptor("a"))]) == [True]
    assert store.record([(REF, descriptor("a"))]) == [False]
    assert store.record([(REF, descriptor("b", arch="arm64")), (REF, descriptor("c"))]) == [True, True]
    assert sorted(e["digest"][7] for e in store.entries()) == ["b", "c"]
    assert store.record([(REF, descriptor("c")), (REF, descriptor("d"))]) == [False, True]
    assert sorted(e["digest"][7] for e in store.entries()) == ["b", "d"]
    assert store.find_entry(REF, parse_platform("linux/arm64"))["digest"][7] == "b"
    assert store.find_entry(parse_reference("example.com/app:2"), None) is None


def test_put_blob_is_content_addressed_and_idempotent(tmp_path):
    store = OciStore(str(tmp_path))
    store.ensure_layout()
    digest = store.put_blob(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert store.put_blob(b"hello") == digest
    assert store.has_blob(digest, 5) and not store.has_blob(digest, 6)
    assert not [name for name in os.listdir(tmp_path / "blobs" / "sha256") if name.startswith(".tmp")]


def test_a_partial_download_resumes_with_its_bytes_already_hashed(tmp_path):
    store = OciStore(str(tmp_path))
    store.ensure_layout()
    data = b"0123456789" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    first = store.open_partial(digest)
    first.write(data[:4000])
    first.close()
    again = store.open_partial(digest)
    assert again.offset == 4000
    again.write(data[4000:])
    assert again.digest() == digest
    store.commit_partial(again, digest)
    assert store.read_blob(digest) == data


def test_a_corrupt_index_is_reported_not_overwritten(tmp_path):
    (tmp_path / "index.json").write_text("{broken")
    with pytest.raises(DockyardError) as caught:
        OciStore(str(tmp_path)).entries()
    assert caught.value.reason == "store_corrupt"
    assert (tmp_path / "index.json").read_text() == "{broken"


def test_docker_manifests_convert_to_oci_with_the_same_blobs():
    docker = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "c" * 64, "size": 3},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:" + "d" * 64, "size": 4}],
    }
    converted = json.loads(oci_manifest(Manifest(json.dumps(docker).encode(), docker["mediaType"], "sha256:" + "e" * 64)))
    assert converted["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert converted["config"] == dict(docker["config"], mediaType="application/vnd.oci.image.config.v1+json")
    assert converted["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert oci_manifest(Manifest(b"{}", "application/vnd.oci.image.manifest.v1+json", "sha256:" + "f" * 64)) == b"{}"
