"""The registry client used directly: tags and catalog follow Link pagination to the end."""

from __future__ import annotations

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.images import Image, Pusher, make_layer


def test_tags_and_catalog_are_paginated_to_the_end(registry, corpus):
    pusher = Pusher(registry.url)
    image = Image([make_layer({"tags": b"x"})])
    tags = sorted(f"v{n}" for n in range(7))
    for tag in tags:
        pusher.image("team/tagged", tag, image)
    client = RegistryClient(CredentialStore([], "/nonexistent"), RegistryOptions(retries=0))
    reference = parse_reference(f"{registry.host}/team/tagged")
    # distribution 2.8 answers tags/list in one unsorted page whatever n is; the catalog paginates.
    assert sorted(client.for_reference(reference).list_tags(reference, page_size=3)) == tags
    mark = registry.mark()
    repositories = client.registry(registry.host).catalog(page_size=2)
    assert {"team/app", "team/worker", "team/multi", "team/tagged"} <= set(repositories)
    assert repositories == sorted(set(repositories))
    pages = [path for method, path, status in registry.requests_since(mark) if "/_catalog" in path]
    assert len(pages) >= len(repositories) // 2 >= 2, pages
    assert all("n=2" in page for page in pages)
