"""image_search: the v1 search contract Docker Hub serves, and the catalog of any other registry."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from support.ansible import run_module
from support.images import Image, Pusher, make_layer
from support.registry import PASSWORD, USER, free_port

# The documented shape of Docker Hub's GET /v1/search answer (fields beyond these may appear).
HUB_ANSWER = {
    "num_pages": 1,
    "num_results": 3,
    "page_size": 25,
    "query": "redis",
    "results": [
        {"name": "redis", "description": "Redis is the world's fastest data platform", "star_count": 12000, "is_official": True, "is_automated": False},
        {"name": "bitnami/redis", "description": "Bitnami Redis image", "star_count": 300, "is_official": False, "is_automated": False},
        {"name": "someone/redis-tools", "description": "", "star_count": 3, "is_official": False, "is_automated": False, "extra": 1},
    ],
}


@pytest.fixture
def search_index():
    """A loopback server answering /v1/search with Docker Hub's documented response."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = urlsplit(self.path)
            if parts.path != "/v1/search":
                self.send_error(404)
                return
            query = parse_qs(parts.query)
            seen.append(query)
            limit = int(query.get("n", ["25"])[0])
            body = json.dumps(dict(HUB_ANSWER, results=HUB_ANSWER["results"][:limit])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.seen = seen
    server.host = f"127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def search(**args):
    return run_module("image_search", args)


def test_the_search_endpoint_answers_with_docker_search_fields_and_filters(search_index):
    result = search(term="redis", registry=search_index.host)
    assert result["changed"] is False
    assert result["results"][0] == {
        "name": "redis",
        "description": "Redis is the world's fastest data platform",
        "star_count": 12000,
        "is_official": True,
        "is_automated": False,
    }
    assert search_index.seen[-1] == {"q": ["redis"], "n": ["25"]}
    assert [r["name"] for r in search(term="redis", registry=search_index.host, filters={"is_official": True})["results"]] == ["redis"]
    assert [r["name"] for r in search(term="redis", registry=search_index.host, filters={"stars": 100})["results"]] == ["redis", "bitnami/redis"]
    assert search(term="redis", registry=search_index.host, filters={"is_automated": True})["results"] == []
    assert len(search(term="redis", registry=search_index.host, limit=2)["results"]) == 2
    assert search_index.seen[-1]["n"] == ["2"]


@pytest.mark.parametrize("limit", [0, 101])
def test_a_limit_outside_1_to_100_is_refused(search_index, limit):
    result = search(term="redis", registry=search_index.host, limit=limit)
    assert result["failed"] and result["reason"] == "invalid_argument"
    assert f"limit {limit} is outside the range of [1, 100]" in result["msg"]


def test_a_registry_without_search_is_searched_through_every_page_of_its_catalog(registry):
    pusher = Pusher(registry.url)
    image = Image([make_layer({"many": b"1"})])
    for n in range(105):
        pusher.image(f"many/r{n:03d}", "1", image)
    mark = registry.mark()
    result = search(term="many/r10", registry=registry.host, limit=100)
    assert [r["name"] for r in result["results"]] == [f"many/r{n}" for n in range(100, 105)]
    pages = [path for method, path, status in registry.requests_since(mark) if "/_catalog" in path]
    assert len(pages) >= 2, pages


def test_tags_are_listed_and_filtered_by_pattern(registry):
    pusher = Pusher(registry.url)
    image = Image([make_layer({"tags": b"1"})])
    for tag in ("v1.0", "v1.1", "v2.0", "latest"):
        pusher.image("search/tagged", tag, image)
    result = search(term="search/tagged", registry=registry.host, list_tags=True, tag_pattern=r"^v1\.")
    assert result["results"] == [
        {"name": "search/tagged", "description": "", "star_count": 0, "is_official": False, "is_automated": False, "tags": ["v1.0", "v1.1"]}
    ]
    bad = search(term="x", registry=registry.host, list_tags=True, tag_pattern="(")
    assert bad["failed"] and bad["reason"] == "invalid_argument"


def test_the_catalog_of_a_token_registry_needs_credentials(token_registry):
    auth = [{"registry": token_registry.host, "username": USER, "password": PASSWORD}]
    found = search(term="team", registry=token_registry.host, registry_auth=auth, list_tags=True)
    assert {"name": "team/app", "description": "", "star_count": 0, "is_official": False, "is_automated": False, "tags": ["1"]} in found["results"]
    assert (USER, ["registry:catalog:*"]) in token_registry.issuer.requests
    anonymous = search(term="team", registry=token_registry.host)
    assert anonymous["failed"] and anonymous["reason"] in ("unauthorized", "denied"), anonymous


def test_the_catalog_of_a_basic_auth_registry_is_searched_with_its_credentials(tls_registry, ca_file):
    auth = [{"registry": tls_registry.host, "username": USER, "password": PASSWORD}]
    found = search(term="app", registry=tls_registry.host, registry_auth=auth, ca_path=ca_file)
    assert [result["name"] for result in found["results"]] == ["team/app"]
