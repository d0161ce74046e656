"""The contract every image store keeps, written once against the Store protocol and run against
every store: the OCI store in the unit tests, Docker Engine and Podman (and each store that comes
after them) in the integration tests. A new store proves itself by passing it.

Each case takes an empty store, a registry client, two images of one registry that share their
base layer (`app` and `worker`: each a name and the support.images.Image pushed under it), and a
directory of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    ALREADY_EXISTS,
    PULL_COMPLETE,
    PullRequest,
    RemovalRequest,
    image_label,
)


@dataclass
class Pushed:
    name: str
    image: object  # support.images.Image


def pull(store, client, pushed: list, check_mode: bool = False, policy: str = "missing") -> list:
    requests = [PullRequest(parse_reference(item.name), host_platform(), policy=policy) for item in pushed]
    results = store.puller(client, 3, check_mode).pull(requests)
    for result in results:
        assert result.error is None, result.error
    return results


def held(store) -> dict:
    """label: image id, for every image the store holds."""
    return {image_label(record): record.id for record in store.images()}


def statuses(result) -> list:
    return [layer.status for layer in result.layers]


def case_a_store_describes_itself_by_its_name(store, client, app, worker, tmp_path):
    assert store.describe()["type"] == store.name


def case_only_what_the_store_lacks_moves_and_a_shared_base_is_one_layer(store, client, app, worker, tmp_path):
    (first,) = pull(store, client, [app])
    assert first.changed and statuses(first) == [PULL_COMPLETE] * len(app.image.layers)
    (second,) = pull(store, client, [worker])
    assert second.changed and statuses(second) == [ALREADY_EXISTS, PULL_COMPLETE], "the base came with app"
    assert second.id == worker.image.id
    records = {image_label(record): record for record in store.images()}
    assert {records[parse_reference(item.name).familiar].id for item in (app, worker)} == {app.image.id, worker.image.id}
    keys = [{layer.key for layer in records[parse_reference(item.name).familiar].layers} for item in (app, worker)]
    assert len(keys[0] & keys[1]) == 1, "both images use one base layer, which the store keeps once"


def case_a_second_pull_changes_nothing_and_moves_nothing(store, client, app, worker, tmp_path):
    pull(store, client, [app, worker])
    again = pull(store, client, [app, worker])
    assert not any(result.changed for result in again)
    assert sum(result.downloaded_bytes for result in again) == 0


def case_check_mode_predicts_the_pull_and_changes_nothing(store, client, app, worker, tmp_path):
    pull(store, client, [app])
    predicted = pull(store, client, [worker], check_mode=True)
    assert held(store) == {parse_reference(app.name).familiar: app.image.id}, "check mode pulled nothing"
    real = pull(store, client, [worker])
    assert [r.changed for r in predicted] == [r.changed for r in real] == [True]
    assert statuses(predicted[0]) == statuses(real[0]) == [ALREADY_EXISTS, PULL_COMPLETE]


def case_a_removal_is_planned_exactly_then_done_keeping_what_others_use(store, client, app, worker, tmp_path):
    pull(store, client, [app, worker])
    before = held(store)
    request = RemovalRequest(names=[app.name])
    planned = store.remove(request, check_mode=True)
    assert held(store) == before, "check mode removed nothing"
    done = store.remove(request, check_mode=False)
    assert planned.untagged == done.untagged == [parse_reference(app.name).familiar]
    assert planned.bytes_freed == done.bytes_freed > 0
    assert held(store) == {parse_reference(worker.name).familiar: worker.image.id}
    assert len(done.kept_layers) == 1 and done.kept_layers[0][1] == [parse_reference(worker.name).familiar], "the base stays for worker"


def case_a_keep_entry_that_names_nothing_removes_nothing(store, client, app, worker, tmp_path):
    pull(store, client, [app, worker])
    before = held(store)
    with pytest.raises(DockyardError) as failed:
        store.remove(RemovalRequest(keep=[app.name, app.name.replace(":", "-typo:")]), check_mode=False)
    assert failed.value.reason == "invalid_argument"
    assert held(store) == before


def case_an_archive_of_the_stores_images_loads_back_into_it_after_they_are_gone(store, client, app, worker, tmp_path):
    from ansible_collections.dockyard.images.plugins.module_utils._archive import DOCKER_ARCHIVE, export_archive, load_archive

    pull(store, client, [app, worker])
    before = held(store)
    path = str(tmp_path / "images.tar")
    written = export_archive(store, [app.name, worker.name], path, DOCKER_ARCHIVE, check_mode=False)
    assert written["changed"] and sorted(image["id"] for image in written["images"]) == sorted([app.image.id, worker.image.id])
    assert not export_archive(store, [worker.name, app.name], path, DOCKER_ARCHIVE, check_mode=False)["changed"], "the same images, the same archive"
    store.remove(RemovalRequest(names=[app.name, worker.name]), check_mode=False)
    assert held(store) == {}
    _format, results = load_archive(store, path, host_platform(), False, None, 3, check_mode=False)
    assert all(result.error is None and result.changed for result in results)
    assert held(store) == before, "the same names, with the same ids"
    _format, again = load_archive(store, path, host_platform(), False, None, 3, check_mode=False)
    assert not any(result.changed for result in again), "a second load changes nothing"


def case_a_store_says_which_images_it_holds_and_which_blobs_it_need_not_be_sent(store, client, app, worker, tmp_path):
    from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor
    from ansible_collections.dockyard.images.plugins.module_utils._stores import Wanted

    def wanted(item) -> Wanted:
        layers = tuple(Descriptor("", layer.digest, layer.size) for layer in item.image.layers)
        return Wanted(item.image.id, (*layers, Descriptor("", item.image.id, len(item.image.config))), tuple(layer.diff_id for layer in item.image.layers))

    nothing = store.holding([wanted(app), wanted(worker)])
    assert nothing.blobs == nothing.images == nothing.names == frozenset()
    pull(store, client, [app])
    alone = store.holding([wanted(app)])
    assert alone.images == {app.image.id} and alone.blobs == {app.image.id, *(layer.digest for layer in app.image.layers)}
    assert alone.names == {(parse_reference(app.name).stored_name, app.image.id)}, "the name it holds the image under"
    both = store.holding([wanted(app), wanted(worker)])
    assert both.images == {app.image.id} and both.names == alone.names
    assert worker.image.layers[1].digest not in both.blobs and worker.image.id not in both.blobs
    base = worker.image.layers[0].digest
    assert base == app.image.layers[0].digest
    assert base in both.blobs, "the shared base is not sent again (Podman knows it by its DiffID, Docker by its ChainID)"


CASES = [value for name, value in sorted(globals().items()) if name.startswith("case_")]
