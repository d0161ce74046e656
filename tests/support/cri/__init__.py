"""A client of the Kubernetes CRI API's image service, as the kubelet asks a runtime about images:
`runtime.v1.ImageService/ImageStatus` over the runtime's socket (containerd serves it on its main one).
Its messages come from `api.proto` beside this file, compiled by grpcio-tools when first asked."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import grpc


@dataclass(frozen=True)
class CriImage:
    """What ImageStatus tells of an image: its id (config digest) and the names the runtime knows it by."""

    id: str
    repo_tags: tuple
    repo_digests: tuple
    size: int


@functools.cache
def _api() -> tuple:
    """(messages, services) of api.proto, compiled once per test session; tests/ is on sys.path."""
    return grpc.protos_and_services("support/cri/api.proto")


class ImageService:
    def __init__(self, socket_path: str, timeout: float = 10):
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.stub = _api()[1].ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def image_status(self, image: str) -> Optional[CriImage]:
        """The image the runtime resolves `image` (name:tag, name@digest or id) to; None when it holds none."""
        messages = _api()[0]
        request = messages.ImageStatusRequest(image=messages.ImageSpec(image=image))
        response = self.stub.ImageStatus(request, timeout=self.timeout)
        if not response.HasField("image"):
            return None
        found = response.image
        return CriImage(found.id, tuple(found.repo_tags), tuple(found.repo_digests), found.size)
