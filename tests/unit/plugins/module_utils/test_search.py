"""Search logic: Docker Hub's term rules, docker search's filters, and the catalog fallback."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._search import SearchRequest, search


class Registry:
    """A registry's answers, recorded: the search logic is what is under test here."""

    def __init__(self, domain, index=None, catalog=(), tags=None):
        self.domain, self.index, self.repositories, self.tags = domain, index, list(catalog), tags or {}
        self.asked = []

    def search(self, term, limit):
        self.asked.append((term, limit))
        return self.index

    def catalog(self, page_size):
        return self.repositories

    def list_tags(self, reference):
        return self.tags[reference.path]


def test_docker_hub_ignores_a_leading_library():
    hub = Registry("docker.io", index=[{"name": "redis", "is_official": True, "star_count": 5}])
    assert [r.name for r in search(hub, SearchRequest("library/redis", limit=10))] == ["redis"]
    assert hub.asked == [("redis", 10)]


def test_without_a_search_endpoint_the_catalog_is_matched_case_insensitively():
    registry = Registry("registry.example.com:5000", catalog=["team/API", "team/worker", "other/api-gateway"])
    assert [r.name for r in search(registry, SearchRequest("api"))] == ["team/API", "other/api-gateway"]


def test_filters_and_limit_apply_after_fetching():
    index = [{"name": f"r{n}", "star_count": n, "is_official": n == 7} for n in range(10)]
    registry = Registry("docker.io", index=index)
    assert [r.name for r in search(registry, SearchRequest("r", filters={"stars": 5}, limit=3))] == ["r5", "r6", "r7"]
    assert [r.name for r in search(registry, SearchRequest("r", filters={"is_official": True}))] == ["r7"]
    assert [r.name for r in search(registry, SearchRequest("r", filters={"is_official": False}, limit=2))] == ["r0", "r1"]


def test_tags_are_sorted_and_filtered():
    registry = Registry("registry.example.com", catalog=["team/api"], tags={"team/api": ["2.1", "1.0", "2.0", "latest"]})
    [result] = search(registry, SearchRequest("api", list_tags=True, tag_pattern=r"^2\."))
    assert result.tags == ["2.0", "2.1"]


def test_a_catalog_name_no_image_can_have_is_listed_without_tags_and_stops_nothing():
    registry = Registry("registry.example.com", catalog=["team/api", "team/API-Upper"], tags={"team/api": ["1.0"]})
    found = {result.name: result.tags for result in search(registry, SearchRequest("api", list_tags=True))}
    assert found == {"team/api": ["1.0"], "team/API-Upper": None}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SearchRequest("x", limit=0), "limit 0 is outside the range of [1, 100]"),
        (SearchRequest("https://x"), "not a URL"),
        (SearchRequest("x", filters={"official": True}), "unknown search filters official"),
        (SearchRequest("x", tag_pattern="["), "not a regular expression"),
    ],
)
def test_bad_requests_are_refused(request_, message):
    with pytest.raises(DockyardError) as caught:
        request_.validate()
    assert caught.value.reason == "invalid_argument" and message in caught.value.message
