"""The least a pull by an Ansible module on requests can take: the floor the cold pull is measured against.

    python3 floor.py DIR < urls.json      # urls.json: [[url, digest, size], ...]

Loads what any such module loads (the interpreter, Ansible's module basics, requests), with garbage
collection off as the modules load, then fetches every blob with three threads, largest first,
hashing each and writing it durably to DIR, the kernel asked to write back every 8 MiB as it
arrives. Nothing else: no arguments to check, no manifests, no store, no result.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

gc.disable()  # as the modules do while they load
importlib.import_module("ansible.module_utils.basic")  # loaded for its cost, as every module loads it

import requests  # noqa: E402

CHUNK = 1024 * 1024
WRITE_BACK_BYTES = 8 * 1024 * 1024


def fetch(session: requests.Session, folder: str, url: str, digest: str) -> None:
    algorithm, expected = digest.split(":")
    hashed = hashlib.new(algorithm)
    with session.get(url, stream=True) as response, open(os.path.join(folder, expected), "wb") as handle:
        response.raise_for_status()
        written = written_back = 0
        for chunk in response.raw.stream(CHUNK, decode_content=False):
            hashed.update(chunk)
            handle.write(chunk)
            written += len(chunk)
            if written - written_back >= WRITE_BACK_BYTES:
                handle.flush()
                os.posix_fadvise(handle.fileno(), written_back, written - written_back, os.POSIX_FADV_DONTNEED)
                written_back = written
        handle.flush()
        os.fsync(handle.fileno())
    if hashed.hexdigest() != expected:
        raise SystemExit(f"{url}: digest mismatch")


def main() -> None:
    folder = sys.argv[1]
    os.makedirs(folder, exist_ok=True)
    blobs = sorted(json.load(sys.stdin), key=lambda blob: -blob[2])
    session = requests.Session()
    with ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(fetch, session, folder, url, digest) for url, digest, _size in blobs]:
            done.result()


if __name__ == "__main__":
    main()
