"""Issue 13, tests that keep trying: every module against a registry that misbehaves on purpose.

The hostile registry (support/hostile.py) listens on 127.0.0.1 and demands Basic credentials; its
second listener on 127.0.0.2 stands for another host. Whatever a registry sends, a task ends in
time, as a failed task with a reason (never `internal_error`, never a traceback) or a success;
a registry's credentials never reach another host; and the OCI store is left valid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess

import pytest

from support.ansible import run_module
from support.hostile import (
    ARCH_DICT,
    ARCH_NUMBER,
    CONFIG_LIST,
    CONFIG_LIST_INDEXED,
    CROWD,
    ECHO_DIGEST,
    ECHO_LOCATION,
    GOOD,
    GOOD_PUBLIC,
    GZIP_BOMB,
    HEAD_NO_DIGEST,
    HUGE_MANIFEST,
    INDEX_NO_DIGEST,
    INDEX_PLATFORM_STRING,
    LAYER_DIGEST_INVALID,
    LINKED_CATALOG,
    LINKED_TAGS,
    LONG_BLOB,
    MAIN,
    MISMATCH,
    OTHER,
    OTHER_ADDRESS,
    REALM_HTTP_VM,
    REALM_HTTPS_OTHER,
    REDIRECT_BLOB,
    SLOW_BLOB,
    SLOW_HEADERS,
    SLOW_MANIFEST,
    TRAVERSAL,
    UNKNOWN_ALGORITHM,
    UPLOAD_ELSEWHERE,
    HostileRegistry,
)

USER, PASSWORD = "hostile-user", "hostile-Pa55-w0rd"
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
DEADLINE = 30.0  # seconds a task against the hostile registry may take, unless a test says otherwise
SLOW_DEADLINE = 40.0  # a pull from a dribbling registry with timeout 5 and the default retries
CRASH_MARKERS = ("Traceback (most recent call last)", "MODULE FAILURE")


@pytest.fixture(scope="module")
def hostile():
    server = HostileRegistry(USER, PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def show_requests(hostile):
    """Print what both listeners received during the test; pytest shows it when the test fails."""
    mark = hostile.mark()
    yield
    for entry in hostile.requests_to(MAIN, mark) + hostile.requests_to(OTHER, mark):
        authorization = (entry.headers.get("Authorization") or "").split(" ")[0]
        print(f"{entry.listener:5} {entry.method:4} {entry.path[:120]} {authorization}")


def registry_auth(hostile) -> list:
    return [{"registry": hostile.host, "username": USER, "password": PASSWORD}]


def run(module: str, args: dict, **how) -> dict:
    """run_module, killed (failing the test) if it outlives twice the usual deadline."""
    how.setdefault("kill_after", 2 * DEADLINE)
    return run_module(module, args, **how)


def pull(hostile, store, names, hosts=None, env=None, kill_after=2 * DEADLINE, **options) -> dict:
    args = {"name": names if isinstance(names, list) else [names], "store": "oci", "store_path": store, "registry_auth": registry_auth(hostile)}
    args.update(options)
    return run("image_pull", args, hosts=hosts, env=env, kill_after=kill_after)


def explain(result: dict) -> str:
    shown = {key: result.get(key) for key in ("reason", "msg", "module_stderr") if result.get(key)}
    return json.dumps(dict(failed=result.get("failed", False), **shown))[:3000]


def assert_fails_with(result: dict, reason: str) -> None:
    assert result["failed"] and result.get("reason") == reason, f"expected a failed task with reason {reason!r}, got {explain(result)}"


def assert_sound(result: dict, hostile, mark: int, store=None, deadline: float = DEADLINE, other_may_authenticate: bool = False) -> list:
    """What holds for every task against the hostile registry, whatever it was asked; the references the store holds."""
    output = json.dumps(result)
    assert result.get("reason") != "internal_error", f"hostile input reached internal_error: {explain(result)}"
    assert not [text for text in CRASH_MARKERS if text in output], f"the module broke instead of failing with a reason: {explain(result)}"
    assert result["failed"] is False or result.get("reason"), f"a failed task without a reason: {explain(result)}"
    assert result["_elapsed"] < deadline, f"the task took {result['_elapsed']:.1f} s, more than {deadline} s"
    if not other_may_authenticate:
        assert_no_credentials_elsewhere(hostile, mark)
    assert not [secret for secret in SECRETS if secret in output], "a secret is in the task's result or output"
    return assert_store_valid(store) if store is not None else []


def assert_no_credentials_elsewhere(hostile, mark: int) -> None:
    """No Authorization header, and no password in a URL, reached the other host."""
    leaked = hostile.authorizations(OTHER, mark)
    assert leaked == [], f"Authorization reached {hostile.other_host}: {leaked}"
    in_query = [entry.path for entry in hostile.requests_to(OTHER, mark) if any(secret in entry.path for secret in SECRETS)]
    assert in_query == [], f"credentials reached {hostile.other_host} in a URL: {in_query}"


def assert_store_valid(store: str) -> list:
    """Every blob hashes to its name (nothing half-written), and skopeo reads every image image_facts lists; those references."""
    blobs = os.path.join(store, "blobs")
    if not os.path.isdir(blobs):
        return []
    for algorithm in os.listdir(blobs):
        assert algorithm in ("sha256", "sha512"), f"blobs/{algorithm} is not a digest algorithm"
        for name in os.listdir(os.path.join(blobs, algorithm)):
            digest = hashlib.new(algorithm)
            with open(os.path.join(blobs, algorithm, name), "rb") as handle:
                for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(chunk)
            assert digest.hexdigest() == name, f"blobs/{algorithm}/{name} does not hash to its name: half-written or corrupt"
    assert os.path.isfile(os.path.join(store, "index.json")), "a layout with blobs/ has an index.json"
    with open(os.path.join(store, "index.json"), encoding="utf-8") as handle:
        if not json.load(handle).get("manifests"):
            return []
    facts = run_module("image_facts", {"store": "oci", "store_path": store})
    assert not facts["failed"], explain(facts)
    references = [image["reference"] for image in facts["images"]]
    for reference in references:
        done = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{store}:{reference}"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"skopeo cannot read {reference} from the store: {done.stderr}"
    return references


# -- 1. a Link to another host -------------------------------------------------------------------


@pytest.mark.parametrize(
    "search, first_page",
    [({"term": "links"}, "/v2/_catalog"), ({"term": LINKED_TAGS, "list_tags": True}, f"/v2/{LINKED_TAGS}/tags/list")],
    ids=["catalog", "tags"],
)
def test_a_next_page_on_another_host_never_gets_the_registry_credentials(hostile, search, first_page):
    mark = hostile.mark()
    result = run("image_search", dict(search, registry=hostile.host, registry_auth=registry_auth(hostile)))
    assert any(entry.path.startswith(first_page) for entry in hostile.requests_to(MAIN, mark)), "the first page came from the registry"
    assert_sound(result, hostile, mark)
    if not result["failed"] and search.get("list_tags"):  # following the link anonymously, or not at all, are both fine
        assert {"1", "2"} <= set(result["results"][0]["tags"]), result["results"]
    elif not result["failed"]:
        assert LINKED_CATALOG in [found["name"] for found in result["results"]], result["results"]


# -- 2. an upload Location on another host -------------------------------------------------------


def test_an_upload_sent_to_another_host_carries_no_credentials(hostile):
    mark = hostile.mark()
    source = f"{hostile.other_host}/{UPLOAD_ELSEWHERE}:1"
    result = run("image_copy", {"name": [source], "destination": hostile.url, "registry_auth": registry_auth(hostile), "platform": "linux/amd64"})
    assert [entry for entry in hostile.requests_to(MAIN, mark) if entry.method == "POST"], "the destination was asked to start an upload"
    assert_sound(result, hostile, mark)


# -- 3. token realms -----------------------------------------------------------------------------


@pytest.mark.parametrize("listed_insecure", [False, True], ids=["loopback-registry", "registry-listed-insecure"])
def test_a_plain_http_realm_on_another_host_gets_no_credentials_and_fails_as_tls(hostile, store, listed_insecure):
    mark = hostile.mark()
    insecure = [hostile.host] if listed_insecure else []
    result = pull(hostile, store, hostile.name(REALM_HTTP_VM), hosts={"vm": OTHER_ADDRESS}, insecure_registries=insecure)
    assert_no_credentials_elsewhere(hostile, mark)
    assert_fails_with(result, "tls")
    assert_sound(result, hostile, mark, store)


def test_an_https_realm_on_another_loopback_host_may_be_asked_and_fails_cleanly(hostile, store):
    # the realm the registry's own challenge named may receive its credentials; here it speaks no TLS
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(REALM_HTTPS_OTHER))
    assert result["failed"] and result.get("reason") in ("tls", "unreachable", "unauthorized"), explain(result)
    assert_sound(result, hostile, mark, store, other_may_authenticate=True)


# -- 4. slow dribble -----------------------------------------------------------------------------


@pytest.mark.parametrize("repository", [SLOW_MANIFEST, SLOW_BLOB, SLOW_HEADERS], ids=["manifest-body", "blob-body", "response-headers"])
def test_a_registry_that_dribbles_fails_unreachable_within_the_deadline(hostile, store, repository):
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(repository), timeout=5, kill_after=SLOW_DEADLINE + 2)
    assert result["_elapsed"] < SLOW_DEADLINE, f"the pull took {result['_elapsed']:.1f} s"
    assert_fails_with(result, "unreachable")
    assert_sound(result, hostile, mark, store, deadline=SLOW_DEADLINE)
    layer = hostile.images[repository].layers[-1].digest.split(":")[1]
    assert not os.path.exists(os.path.join(store, "blobs", "sha256", layer)), "the dribbled layer is not in blobs/"
    if os.path.exists(os.path.join(store, "index.json")):
        with open(os.path.join(store, "index.json"), encoding="utf-8") as handle:
            assert json.load(handle)["manifests"] == [], "nothing was tagged"


# -- 5. shapes that used to be tracebacks --------------------------------------------------------


def shape_runs():
    """Every module that reads the image's config or index, against each shape it must refuse."""
    for repository in (CONFIG_LIST, CONFIG_LIST_INDEXED, ARCH_NUMBER, ARCH_DICT, INDEX_NO_DIGEST, INDEX_PLATFORM_STRING):
        yield pytest.param("image_pull", repository, id=f"pull-{repository.split('/')[1]}")
        yield pytest.param("image_facts", repository, id=f"facts-remote-{repository.split('/')[1]}")
        if repository in (INDEX_NO_DIGEST, INDEX_PLATFORM_STRING):  # a copy reads indexes, and passes configs as they are
            yield pytest.param("image_copy", repository, id=f"copy-{repository.split('/')[1]}")


@pytest.mark.parametrize("module, repository", shape_runs())
def test_a_config_or_index_of_the_wrong_shape_is_unsupported_media_type(hostile, store, module, repository):
    mark = hostile.mark()
    args = {"name": [hostile.name(repository)], "registry_auth": registry_auth(hostile), "platform": "linux/amd64"}
    args.update(
        {
            "image_pull": {"store": "oci", "store_path": store},
            "image_facts": {"remote": True},
            "image_copy": {"destination": hostile.other_url},
        }[module]
    )
    result = run(module, args)
    assert_fails_with(result, "unsupported_media_type")
    assert repository in result["msg"], "the message names the image"
    assert_sound(result, hostile, mark, store)


BAD_URL = "http://[::1"


@pytest.mark.parametrize(
    "module, args",
    [
        (
            "image_pull",
            lambda hostile, store: {
                "name": [hostile.name(GOOD)],
                "store": "oci",
                "store_path": store,
                "registry_auth": [{"registry": BAD_URL, "username": "someone", "password": "unused-Pa55-w0rd"}],
            },
        ),
        ("image_copy", lambda hostile, store: {"name": [hostile.name(GOOD)], "destination": BAD_URL, "registry_auth": registry_auth(hostile)}),
        ("image_search", lambda hostile, store: {"term": "app", "registry": BAD_URL}),
    ],
    ids=["registry_auth", "copy-destination", "search-registry"],
)
def test_an_unparsable_registry_url_is_an_invalid_argument(hostile, store, module, args):
    mark = hostile.mark()
    result = run(module, args(hostile, store))
    assert_fails_with(result, "invalid_argument")
    assert BAD_URL in result["msg"]
    assert_sound(result, hostile, mark, store)


# -- 6. one bad image among good ones ------------------------------------------------------------


def test_one_image_with_an_invalid_digest_fails_alone_and_the_good_one_is_pulled_and_tagged(hostile, store):
    # both are public: no challenge, so the crossed challenges of test 9 cannot fail them first
    mark = hostile.mark()
    good, bad = hostile.name(GOOD_PUBLIC), hostile.name(LAYER_DIGEST_INVALID)
    result = pull(hostile, store, [good, bad])
    assert [image["reference"] for image in result.get("images") or []] == [good, bad], f"one result per image, in order: {explain(result)}"
    first, second = result["images"]
    assert not first.get("failed") and first["digest"] == hostile.images[GOOD_PUBLIC].digest, f"the good image failed: {explain(first)}"
    assert second.get("failed") and second.get("reason") == "unsupported_media_type", f"the bad image: {explain(second)}"
    assert hostile.host in second["msg"] or "served" in second["msg"], "the registry's fault is named as such"
    assert_fails_with(result, "unsupported_media_type")
    assert good in assert_sound(result, hostile, mark, store), "the good image is tagged"


# -- 7. wrong words ------------------------------------------------------------------------------


def test_a_blob_longer_than_declared_is_a_digest_mismatch_that_says_so(hostile, store):
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(LONG_BLOB))
    assert_fails_with(result, "digest_mismatch")
    assert "0 bytes" not in result["msg"], result["msg"]
    assert "more than" in result["msg"], f"the message says the registry sent more than declared: {result['msg']}"
    assert_sound(result, hostile, mark, store)


def test_a_destination_with_a_port_that_is_no_number_is_refused_at_once(hostile):
    mark = hostile.mark()
    result = run("image_copy", {"name": [hostile.name(GOOD)], "destination": "127.0.0.1:abc", "registry_auth": registry_auth(hostile)})
    assert_fails_with(result, "invalid_argument")
    assert "127.0.0.1:abc" in result["msg"]
    assert hostile.requests_to(MAIN, mark) + hostile.requests_to(OTHER, mark) == [], "no request was sent"
    assert_sound(result, hostile, mark, deadline=15)


@pytest.mark.parametrize("mirror", ["::::", "http://127.0.0.1:99999"], ids=["colons", "port-out-of-range"])
def test_an_unusable_mirror_url_is_an_invalid_argument(hostile, store, mirror):
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(GOOD), mirrors={hostile.host: [mirror]})
    assert_fails_with(result, "invalid_argument")
    assert mirror in result["msg"]
    assert_sound(result, hostile, mark, store)


def test_a_password_in_a_mirror_url_never_shows_in_verbose_output(hostile, store):
    mark = hostile.mark()
    mirror = f"http://mirror-user:secretpw@{hostile.host}"
    result = pull(hostile, store, hostile.name(GOOD), mirrors={hostile.host: [mirror]}, env={"ANSIBLE_VERBOSITY": "3"}, retries=0)
    assert "secretpw" not in result["_stdout"] + result["_stderr"], "the mirror's password shows in -vvv output"
    assert_sound(result, hostile, mark, store)


# -- 8. what held, and must keep holding ---------------------------------------------------------


@pytest.mark.parametrize(
    "repository, reasons",
    [
        # the registry's fault: a digest no store may hold is refused when the manifest is read
        (TRAVERSAL, ("unsupported_media_type",)),
        (UNKNOWN_ALGORITHM, ("unsupported_media_type",)),
        (MISMATCH, ("digest_mismatch",)),
        (HUGE_MANIFEST, ("unsupported_media_type",)),
    ],
    ids=["path-traversal-digest", "md5-digest", "mismatched-bytes", "50MB-manifest"],
)
def test_content_that_is_not_what_it_claims_is_refused_and_nothing_escapes_the_store(hostile, store, repository, reasons):
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(repository))
    assert result["failed"] and result.get("reason") in reasons, f"expected a failure with a reason in {reasons}, got {explain(result)}"
    for outside in (os.path.join(store, "etc"), os.path.join(store, ".dockyard", "etc"), os.path.join(os.path.dirname(store), "etc")):
        assert not os.path.exists(outside), f"a digest wrote {outside}"
    if repository == MISMATCH:
        assert not os.path.exists(os.path.join(store, "blobs", "sha256", hostile.images[MISMATCH].layers[1].digest.split(":")[1]))
    assert_sound(result, hostile, mark, store)


def test_a_gzip_bomb_is_stored_as_served_and_never_inflated(hostile, store):
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(GZIP_BOMB))
    assert not result["failed"], explain(result)
    blob = os.path.join(store, "blobs", "sha256", hostile.gzip_bomb_digest.split(":")[1])
    assert os.path.getsize(blob) == hostile.gzip_bomb_size
    assert result["images"][0]["size"] == hostile.gzip_bomb_size
    assert_sound(result, hostile, mark, store)


def test_a_blob_redirected_to_another_host_is_fetched_there_without_credentials(hostile, store):
    mark = hostile.mark()
    result = pull(hostile, store, hostile.name(REDIRECT_BLOB))
    assert not result["failed"], explain(result)
    assert [entry for entry in hostile.requests_to(OTHER, mark) if entry.path.startswith("/blob/")], "the blobs came from the other host"
    assert hostile.authorizations(MAIN, mark), "the registry itself got the credentials"
    assert_sound(result, hostile, mark, store)


# -- 9. beyond issue 13 --------------------------------------------------------------------------


def test_images_whose_first_requests_cross_the_basic_challenge_are_all_pulled(hostile, store):
    # Several images resolve at once; each first request goes out before any 401 came back. The
    # first 401 switches the endpoint to Basic; the others must retry with it, not fail unauthorized.
    mark = hostile.mark()
    names = [hostile.name(repository) for repository in CROWD]
    result = pull(hostile, store, names)
    assert not result["failed"], explain(result)
    assert sorted(assert_sound(result, hostile, mark, store)) == sorted(names)


@pytest.mark.parametrize("credentials_from", ["registry_auth", "docker_config"])
def test_a_registry_that_echoes_the_credentials_never_gets_them_into_the_result(hostile, tmp_path, credentials_from):
    """In a redirect's URL and in a digest it labels a manifest with (a warning), whether the credentials were a
    task's option (which Ansible masks itself) or read from a docker config (which it does not know)."""
    store = str(tmp_path / "store")
    args = {"name": [hostile.name(ECHO_LOCATION), hostile.name(ECHO_DIGEST)], "store": "oci", "store_path": store}
    if credentials_from == "registry_auth":
        args["registry_auth"] = registry_auth(hostile)
    else:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {hostile.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
        args["docker_config"] = str(config)
    mark = hostile.mark()

    result = run("image_pull", args)

    assert_sound(result, hostile, mark, store)
    assert result["failed"], "the redirect to gopher:// fails its image"
    by_name = {image["reference"]: image for image in result["images"]}
    assert by_name[hostile.name(ECHO_DIGEST)].get("failed") is not True, "a wrong label is a warning: the bytes were verified"
    assert any("labelled manifest" in str(warning) for warning in result.get("warnings") or []), result.get("warnings")


def test_a_head_that_labels_a_manifest_with_no_digest_fails_the_image_as_the_registrys_fault(hostile, tmp_path):
    store = str(tmp_path / "store")
    assert not pull(hostile, store, [hostile.name(HEAD_NO_DIGEST)])["failed"]
    mark = hostile.mark()

    again = pull(hostile, store, [hostile.name(HEAD_NO_DIGEST), hostile.name(GOOD)], policy="always")
    facts = run("image_facts", {"name": [hostile.name(HEAD_NO_DIGEST)], "remote": True, "digests_only": True, "registry_auth": registry_auth(hostile)})

    assert_sound(again, hostile, mark, store)
    assert_fails_with(again, "unsupported_media_type")
    assert {image["reference"]: image.get("failed", False) for image in again["images"]} == {
        hostile.name(HEAD_NO_DIGEST): True,
        hostile.name(GOOD): False,
    }, "the other image of the task is pulled"
    assert_sound(facts, hostile, mark)
    assert_fails_with(facts, "unsupported_media_type")
    assert "etc/passwd" not in json.dumps(facts.get("images")), "no label that is no digest reaches a result (a lockfile is written from it)"
