"""Task options, as _args checks them before anything is sent: every bad value ends in a DockyardError
with reason invalid_argument and a message that names the option, the value and what is allowed; the
values at the edges of each range are accepted, and what is accepted reaches the client as given.
"""

from __future__ import annotations

import base64
import gc
import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.dockyard.images.plugins.module_utils._args import (
    MAX_CONCURRENCY,
    MAX_RETRIES,
    MAX_TIMEOUT,
    DockyardModule,
    fail_on_errors,
    merged_spec,
    registry_argument_spec,
    registry_client,
    run_and_exit,
    store_argument_spec,
    store_from_params,
    transfer_settings,
)
from ansible_collections.dockyard.images.plugins.module_utils._auth import Credential
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform
from ansible_collections.dockyard.images.plugins.module_utils._transport import EndpointAddress


def options(**given) -> dict:
    """A task's parameters as AnsibleModule hands them over: every default, then `given`."""
    params = {name: spec.get("default") for name, spec in {**registry_argument_spec(), **store_argument_spec()}.items()}
    params.update(docker_config="/nonexistent/config.json", concurrency=3, platform=None)
    params.update(given)
    return params


def refusal(call, *args) -> DockyardError:
    with pytest.raises(DockyardError) as caught:
        call(*args)
    assert caught.value.reason == "invalid_argument"
    return caught.value


@pytest.fixture
def client_of():
    made = []

    def make(params: dict):
        made.append(registry_client(params))
        return made[-1]

    yield make
    for client in made:
        client.transport.session.close()


# -- timeouts, retries, concurrency ----------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -5, MAX_TIMEOUT + 1])
def test_a_timeout_out_of_range_is_refused_saying_the_range(timeout):
    error = refusal(registry_client, options(timeout=timeout))

    assert error.message == f"timeout must be from 1 to {MAX_TIMEOUT} seconds, not {timeout}"


@pytest.mark.parametrize("retries", [-1, MAX_RETRIES + 1])
def test_retries_out_of_range_are_refused_saying_the_range(retries):
    error = refusal(registry_client, options(retries=retries))

    assert error.message == f"retries must be from 0 to {MAX_RETRIES}, not {retries}"


@pytest.mark.parametrize(("timeout", "retries"), [(1, 0), (MAX_TIMEOUT, MAX_RETRIES), (60, 4)], ids=["lowest", "highest", "defaults"])
def test_timeout_and_retries_at_the_edges_of_their_ranges_reach_the_client(client_of, timeout, retries):
    client = client_of(options(timeout=timeout, retries=retries))

    assert (client.options.timeout, client.options.retries) == (float(timeout), retries)


@pytest.mark.parametrize("concurrency", [0, -1, MAX_CONCURRENCY + 1])
def test_concurrency_out_of_range_is_refused_saying_the_range(concurrency):
    error = refusal(transfer_settings, options(concurrency=concurrency))

    assert error.message == f"concurrency must be from 1 to {MAX_CONCURRENCY}, not {concurrency}"


@pytest.mark.parametrize("concurrency", [1, MAX_CONCURRENCY])
def test_concurrency_at_the_edges_is_accepted_with_the_platform_given_or_the_host_one(concurrency):
    given, platform = transfer_settings(options(concurrency=concurrency, platform="linux/aarch64"))
    default = transfer_settings(options(concurrency=concurrency))[1]

    assert (given, str(platform)) == (concurrency, "linux/arm64"), "aarch64 is normalised as docker does"
    assert str(default) == str(host_platform())


def test_a_platform_that_is_not_one_is_refused():
    error = refusal(transfer_settings, options(platform="linux/arm64/v8/extra"))

    assert "linux/arm64/v8/extra" in error.message and "os/architecture" in error.message


def test_a_bad_timeout_is_refused_before_the_store_is_opened(tmp_path):
    store_path = tmp_path / "store"

    error = refusal(store_from_params, options(timeout=0, store="oci", store_path=str(store_path)))

    assert "timeout" in error.message and not store_path.exists()


def test_store_options_open_the_oci_store_at_its_path_with_the_timeout_as_its_lock_timeout(tmp_path):
    store = store_from_params(options(timeout=7, store="oci", store_path=str(tmp_path / "store")))

    assert (store.name, store.root, store.lock_timeout) == ("oci", str(tmp_path / "store"), 7.0)
    assert not (tmp_path / "store").exists(), "opening a store writes nothing"


# -- ca_path -------------------------------------------------------------------------------------


def test_a_ca_path_that_is_not_a_file_is_refused(tmp_path):
    error = refusal(registry_client, options(ca_path=str(tmp_path)))

    assert error.message == f"ca_path {tmp_path} is not a file; give a CA bundle in PEM form"


def test_a_ca_path_that_is_a_file_reaches_the_client(tmp_path, client_of):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")

    assert client_of(options(ca_path=str(bundle))).options.ca_path == str(bundle)


# -- mirrors -------------------------------------------------------------------------------------


def test_mirrors_are_parsed_per_registry_in_order_a_single_url_as_a_list(client_of):
    client = client_of(
        options(
            mirrors={
                "https://index.docker.io/v1/": ["mirror.example.com:5000", "http://127.0.0.1:5001"],
                "Registry.Example.com": "https://Cache.Example.com",
            }
        )
    )

    assert client.options.mirrors == {
        "docker.io": (EndpointAddress("mirror.example.com:5000", None), EndpointAddress("127.0.0.1:5001", "http")),
        "registry.example.com": (EndpointAddress("cache.example.com", "https"),),
    }


@pytest.mark.parametrize(
    ("urls", "said"),
    [
        ([""], "must be a list of endpoint URLs"),
        ([5000], "must be a list of endpoint URLs"),
        ({"url": "https://mirror.example.com"}, "must be a list of endpoint URLs"),
        (None, "must be a list of endpoint URLs"),
        (["https://mirror.example.com/v2/"], "is not a registry endpoint"),
        (["ftp://mirror.example.com"], "is not a registry endpoint"),
        (["https://mirror.example.com?x=1"], "is not a registry endpoint"),
        (["mirror.example.com:0"], "ports run from 1 to 65535"),
        (["https://deploy:hunter2@mirror.example.com"], "has credentials in it"),
    ],
    ids=["empty", "not-a-string", "a-mapping", "null", "a-path", "not-http", "a-query", "port-zero", "credentials"],
)
def test_a_mirror_that_is_not_an_endpoint_is_refused_naming_the_registry(urls, said):
    error = refusal(registry_client, options(mirrors={"docker.io": urls}))

    assert "mirrors['docker.io']" in error.message and said in error.message
    assert "hunter2" not in error.message


# -- insecure_registries -------------------------------------------------------------------------


def test_insecure_registries_are_normalised_host_and_port(client_of):
    client = client_of(options(insecure_registries=["Registry.Example.COM:5000", " 10.0.0.1:5000 ", "localhost"]))

    assert client.options.insecure_registries == ("registry.example.com:5000", "10.0.0.1:5000", "localhost")


def test_insecure_registries_that_are_not_host_and_port_are_all_named_in_one_refusal():
    error = refusal(registry_client, options(insecure_registries=["ok.example.com", "http://registry.example.com", "host:0", "a b"]))

    assert error.message == "insecure_registries: 'http://registry.example.com', 'host:0', 'a b' is not a host[:port]"


# -- how a module ends ---------------------------------------------------------------------------


class Ended(Exception):
    """What a module's fail_json or exit_json did: it ends the module, as AnsibleModule's do."""

    def __init__(self, how: str, result: dict):
        super().__init__(how)
        self.how, self.result = how, result


class FakeModule:
    def __init__(self, **params):
        self.params = options(**params)
        self.no_log_values = set()

    def fail_json(self, **result):
        raise Ended("failed", result)

    def exit_json(self, **result):
        raise Ended("exited", result)


@pytest.fixture
def end():
    """Run run_and_exit and return how the module ended; garbage collection is as before after it."""

    def run(module: FakeModule, work) -> Ended:
        with pytest.raises(Ended) as caught:
            run_and_exit(module, work)
        return caught.value

    yield run
    gc.unfreeze()


def broken(error: Exception):
    def work():
        raise error

    return work


def test_a_dockyard_error_fails_the_module_with_its_reason_message_and_details(end):
    ended = end(FakeModule(), broken(DockyardError("disk_full", "no room", bytes_needed=10, bytes_free=1)))

    assert (ended.how, ended.result) == ("failed", {"msg": "no room", "reason": "disk_full", "bytes_needed": 10, "bytes_free": 1})


def test_an_unexpected_exception_is_an_internal_error_that_repeats_no_url_credentials(end):
    ended = end(FakeModule(), broken(ValueError("cannot use https://deploy:hunter2@registry.example.com/v2/")))

    assert ended.how == "failed" and ended.result["reason"] == "internal_error"
    assert ended.result["msg"].startswith("internal error: ValueError: ") and "hunter2" not in ended.result["msg"]
    assert "Traceback" in ended.result["exception"]


def module_output(capsys, args: dict, work=None) -> dict:
    """What a DockyardModule with the registry options prints as it ends: run `work(module)` (which may fail), then exit."""
    with patch_module_args(args), pytest.raises(SystemExit):
        module = DockyardModule(argument_spec=merged_spec({"name": {"type": "str"}}, registry_argument_spec))
        run_and_exit(module, lambda: work(module) if work else {"changed": False})
    return json.loads(capsys.readouterr().out)


def test_credentials_written_into_an_endpoint_url_are_kept_out_of_every_result(capsys):
    ended = module_output(capsys, {"mirrors": {"docker.io": ["https://deploy:hunter2@mirror.example.com"]}})
    assert "hunter2" not in json.dumps(ended) and not ended.get("failed")


def test_an_option_ansible_refuses_fails_with_a_reason_and_no_credential_from_a_url(capsys):
    ended = module_output(capsys, {"mirrors": {"docker.io": ["deploy:hunter2@mirror.example.com"]}, "timeout": "soon"})
    assert ended["failed"] and ended["reason"] == "invalid_argument" and "timeout" in ended["msg"]
    assert "hunter2" not in json.dumps(ended)


def test_a_secret_the_process_held_is_blanked_wherever_it_is_echoed(capsys, monkeypatch):
    warned = []
    monkeypatch.setattr(basic, "warn", lambda warning, **_kwargs: warned.append(warning))  # where AnsibleModule.warn records it

    def echo(module):
        credential = Credential(username="deploy", password="from-docker-config")  # as read from a docker config: no option of the task
        encoded = base64.b64encode(b"deploy:from-docker-config").decode()
        module.warn(f"the registry labelled it sha256:{credential.password}")
        raise DockyardError("not_found", f"the registry sent us to gopher://x/{encoded}")

    ended = module_output(capsys, {"name": "x"}, echo)
    assert ended["reason"] == "not_found" and "gopher://x/" in ended["msg"]
    assert "from-docker-config" not in json.dumps(ended) and "ZGVwbG95OmZyb20tZG9ja2VyLWNvbmZpZw" not in json.dumps(ended)
    assert warned == ["the registry labelled it sha256:********"]


def test_the_outcome_of_work_is_what_the_module_exits_with(end):
    module = FakeModule()

    ended = end(module, lambda: {"changed": True, "images": []})

    assert (ended.how, ended.result) == ("exited", {"changed": True, "images": []}) and module.no_log_values == set()


def test_failed_images_fail_the_task_with_the_first_reason_and_every_message():
    errors = [DockyardError("not_found", "team/a:1: gone"), DockyardError("disk_full", "team/b:1: no room", bytes_needed=3, bytes_free=1)]

    with pytest.raises(Ended) as caught:
        fail_on_errors(FakeModule(), {"changed": True, "images": []}, errors)

    assert caught.value.how == "failed"
    assert caught.value.result == {"changed": True, "images": [], "msg": "team/a:1: gone; team/b:1: no room", "reason": "not_found"}


def test_without_failed_images_the_outcome_is_returned_unchanged():
    assert fail_on_errors(FakeModule(), {"changed": False, "images": []}, []) == {"changed": False, "images": []}


def test_a_module_own_options_override_the_shared_groups_which_are_new_dicts_each_time():
    spec = merged_spec({"timeout": {"type": "int", "default": 5}}, registry_argument_spec, store_argument_spec)
    spec["mirrors"]["default"]["docker.io"] = ["https://mirror.example.com"]

    assert spec["timeout"] == {"type": "int", "default": 5} and spec["store"]["default"] == "auto"
    assert registry_argument_spec()["mirrors"]["default"] == {} and registry_argument_spec()["timeout"]["default"] == 60
