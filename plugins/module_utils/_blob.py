# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Verifying sinks that blobs stream into: in memory, or in an open file (a spool, a store's partial).

A sink hashes what it is given with the algorithm of the digest it expects, so whoever fills it
can check the digest at the end without reading the bytes again. It knows no HTTP and no store.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import hashlib

CHUNK = 1024 * 1024
DIGEST_ALGORITHMS = ("sha256", "sha512")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobSink:
    """Where a blob streams to: the registry client only writes, restarts and asks for the digest."""

    offset: int

    def write(self, chunk: bytes) -> None: ...

    def restart(self) -> None: ...

    def digest(self) -> str: ...


class HashingSink(BlobSink):
    """A sink that hashes what it is given; subclasses keep the bytes."""

    def __init__(self, digest: str):
        algorithm = digest.split(":", 1)[0]
        self._algorithm = algorithm if algorithm in DIGEST_ALGORITHMS else "sha256"
        self._hash = hashlib.new(self._algorithm)
        self.offset = 0

    def write(self, chunk: bytes) -> None:
        self._keep(chunk)
        self._count(chunk)

    def _count(self, chunk: bytes) -> None:
        """Hash bytes the sink holds."""
        self._hash.update(chunk)
        self.offset += len(chunk)

    def restart(self) -> None:
        self._discard()
        self._hash = hashlib.new(self._algorithm)
        self.offset = 0

    def digest(self) -> str:
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def _keep(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


class MemorySink(HashingSink):
    """A blob kept in memory (a config)."""

    def __init__(self, digest: str):
        super().__init__(digest)
        self.data = bytearray()

    def _keep(self, chunk: bytes) -> None:
        self.data += chunk

    def _discard(self) -> None:
        self.data = bytearray()


class FileSink(HashingSink):
    """A blob kept in an open binary file, from the file's start."""

    def __init__(self, digest: str, file):
        super().__init__(digest)
        self.file = file

    def _keep(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def _discard(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def close(self) -> None:
        self.file.close()
