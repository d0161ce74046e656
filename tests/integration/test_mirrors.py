"""Mirrors are tried first, fall through to the registry, and never see its credentials."""

from __future__ import annotations

import base64

from support.ansible import run_module
from support.images import Pusher
from support.proxy import FaultProxy
from support.registry import PASSWORD, USER, RegistryServer


def test_a_mirror_that_holds_the_image_serves_it_and_one_that_lacks_it_falls_through(registry, corpus, store, tmp_path):
    mirror = RegistryServer(str(tmp_path / "mirror")).start()
    empty = RegistryServer(str(tmp_path / "empty")).start()
    watch = FaultProxy(mirror.url).start()
    try:
        Pusher(mirror.url).image("team/app", "1", corpus.app)
        mirrors = {registry.host: [empty.url, watch.url]}
        auth = [{"registry": registry.host, "username": USER, "password": PASSWORD}]
        mark = registry.mark()
        result = run_module("image_pull", {"name": [f"{registry.host}/team/app:1"], "store_path": store, "mirrors": mirrors, "registry_auth": auth})
        assert result["changed"] is True, result
        assert result["images"][0]["digest"] == corpus.app.digest
        assert registry.requests_since(mark) == [], "the registry itself was not needed"
        assert {status for method, path, status in empty.requests_seen() if "/v2/team/" in path} == {404}
        assert any(corpus.app.layers[1].digest in entry[1] for entry in watch.log)
        secret = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert all(secret not in str(entry) for entry in watch.log)

        worker = run_module("image_pull", {"name": [f"{registry.host}/team/worker:1"], "store_path": store, "mirrors": mirrors})
        assert worker["changed"] is True, worker
        assert any(corpus.worker.layers[1].digest in path for method, path, status in registry.requests_since(mark))
    finally:
        watch.stop()
        mirror.stop()
        empty.stop()
