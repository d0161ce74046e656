"""Build real images (tar+gzip layers, config, manifest) and push them through the registry API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LAYER_TYPES = {OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip", DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip"}
CONFIG_TYPES = {OCI_MANIFEST: "application/vnd.oci.image.config.v1+json", DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layer:
    tar: bytes
    blob: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.blob)

    @property
    def diff_id(self) -> str:
        return digest_of(self.tar)

    @property
    def size(self) -> int:
        return len(self.blob)


def make_layer(files: dict) -> Layer:
    """A tar+gzip layer holding `files` (path → bytes), byte-for-byte reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(content))
    raw = buffer.getvalue()
    return Layer(raw, gzip.compress(raw, compresslevel=1, mtime=0))


def random_layer(size: int, seed: str) -> Layer:
    """A layer of incompressible bytes, so its blob is about `size` bytes."""
    generator, chunk = random.Random(seed), 64 * 1024 * 1024
    data = b"".join(generator.randbytes(min(chunk, size - start)) for start in range(0, size, chunk))
    return make_layer({f"data/{seed}.bin": data})


@dataclass
class Image:
    layers: list
    architecture: str = "amd64"
    os: str = "linux"
    variant: str = ""
    media_type: str = DOCKER_MANIFEST
    created: str = "2026-01-02T03:04:05Z"
    labels: dict = field(default_factory=dict)

    @property
    def config(self) -> bytes:
        data = {
            "architecture": self.architecture,
            "os": self.os,
            "created": self.created,
            "config": {"Labels": self.labels or None, "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [{"created": self.created, "created_by": f"COPY layer {n} /"} for n in range(len(self.layers))],
        }
        if self.variant:
            data["variant"] = self.variant
        return json.dumps(data, sort_keys=True).encode()

    @property
    def manifest(self) -> bytes:
        data = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {"mediaType": CONFIG_TYPES[self.media_type], "digest": digest_of(self.config), "size": len(self.config)},
            "layers": [{"mediaType": LAYER_TYPES[self.media_type], "digest": layer.digest, "size": layer.size} for layer in self.layers],
        }
        return json.dumps(data, indent=3).encode()

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def id(self) -> str:
        return digest_of(self.config)

    @property
    def platform(self) -> dict:
        data = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        return data


@dataclass
class Index:
    images: list
    attestations: list = field(default_factory=list)  # (image, subject image) pairs
    media_type: str = OCI_INDEX

    @property
    def manifest(self) -> bytes:
        manifests = [{"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest), "platform": image.platform} for image in self.images]
        for attestation, subject in self.attestations:
            manifests.append(
                {
                    "mediaType": attestation.media_type,
                    "digest": attestation.digest,
                    "size": len(attestation.manifest),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": subject.digest},
                }
            )
        return json.dumps({"schemaVersion": 2, "mediaType": self.media_type, "manifests": manifests}, indent=2).encode()

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


class Pusher:
    """Pushes blobs and manifests with the plain registry API."""

    def __init__(self, base_url: str, session: requests.Session = None):
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()

    def blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        head = self.session.head(f"{self.base_url}/v2/{repo}/blobs/{digest}")
        if head.status_code == 200:
            return digest
        start = self.session.post(f"{self.base_url}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base_url + location
        done = self.session.put(location, params={"digest": digest}, data=data, headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        return digest

    def manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        response = self.session.put(f"{self.base_url}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type})
        assert response.status_code == 201, response.text
        return digest_of(body)

    def image(self, repo: str, tag: str, image: Image) -> str:
        for layer in image.layers:
            self.blob(repo, layer.blob)
        self.blob(repo, image.config)
        return self.manifest(repo, tag, image.manifest, image.media_type)

    def index(self, repo: str, tag: str, index: Index) -> str:
        for image in index.images + [pair[0] for pair in index.attestations]:
            for layer in image.layers:
                self.blob(repo, layer.blob)
            self.blob(repo, image.config)
            self.manifest(repo, image.digest, image.manifest, image.media_type)
        return self.manifest(repo, tag, index.manifest, index.media_type)
