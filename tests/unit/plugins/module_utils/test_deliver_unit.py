"""The host's side of a delivery: what it says it holds, what a delivery cut short left, and which platform
of an image the controller sends."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._deliver import best_for, blob_path, checked_staging, inventory, receive, staging_name
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import Holding as StoreHolding
from ansible_collections.dockyard.images.plugins.module_utils._stores import ImageRecord, LayerRecord


class Holding:
    """A store that holds some blobs and some tagged images."""

    def __init__(self, blobs: set, records: list):
        self.blobs, self.records = blobs, records

    def holding(self, images: list) -> StoreHolding:
        return StoreHolding.per_blob(images, lambda d: d.digest in self.blobs, self.records)


def digest(char: str) -> str:
    return "sha256:" + char * 64


def record(name: str, image_id: str, platform: str = "linux/amd64") -> ImageRecord:
    return ImageRecord(
        reference=parse_reference(name),
        id=image_id,
        digest=image_id,
        manifest_digest=image_id,
        platform=parse_platform(platform),
        created=None,
        layers=[LayerRecord(digest("a"), 10)],
        config_size=5,
    )


@pytest.fixture
def staging(tmp_path):
    path = tmp_path / ".cache" / "dockyard" / "deliver" / staging_name({"store": "oci", "store_path": "/srv/oci"})
    os.makedirs(path / "blobs" / "sha256")
    return str(path)


def test_the_inventory_counts_whole_staged_blobs_and_drops_cut_ones(staging):
    images = [
        {
            "id": digest("c"),
            "names": ["registry.example/team/app:1"],
            "blobs": [{"digest": digest("a"), "size": 10}, {"digest": digest("b"), "size": 20}, {"digest": digest("c"), "size": 5}],
        }
    ]
    with open(blob_path(staging, digest("a")), "wb") as whole:
        whole.write(b"x" * 10)
    with open(blob_path(staging, digest("b")), "wb") as cut:
        cut.write(b"x" * 7)
    store = Holding({digest("c")}, [record("registry.example/team/app:1", digest("c")), record("registry.example/team/app:2", digest("d"))])
    found = inventory(store, images, staging)
    assert found == {"held": [digest("c")], "staged": [digest("a")], "tagged": []}, "a name whose image lacks blobs is not held"
    assert not os.path.exists(blob_path(staging, digest("b"))), "a blob cut short is sent again whole"
    store.blobs |= {digest("a"), digest("b")}
    assert inventory(store, images, staging)["tagged"] == ["registry.example/team/app:1"], "only the name the store holds as that image"


def test_check_mode_leaves_a_cut_blob_where_it_is(staging):
    images = [{"id": digest("c"), "blobs": [{"digest": digest("b"), "size": 20}]}]
    with open(blob_path(staging, digest("b")), "wb") as cut:
        cut.write(b"x" * 7)
    assert inventory(Holding(set(), []), images, staging, check_mode=True)["staged"] == []
    assert os.path.exists(blob_path(staging, digest("b")))


def test_a_manifest_that_arrived_whole_counts_as_staged_but_never_as_held(staging):
    images = [{"id": digest("c"), "blobs": [{"digest": digest("c"), "size": 5}], "manifests": [{"digest": digest("e"), "size": 30}]}]
    with open(blob_path(staging, digest("e")), "wb") as whole:
        whole.write(b"x" * 30)
    found = inventory(Holding({digest("e")}, []), images, staging)
    assert found["staged"] == [digest("e")] and found["held"] == [], "a manifest is sent (or resumed) whatever the store holds"


@pytest.mark.parametrize("manifests", [[{"digest": "sha256:../../etc", "size": 3}], [{"digest": digest("e")}], ["sha256:" + "e" * 64]])
def test_a_manifest_that_is_no_digest_and_size_is_refused(staging, manifests):
    images = [{"id": digest("c"), "blobs": [], "manifests": manifests}]
    with pytest.raises(DockyardError) as refused:
        inventory(Holding(set(), []), images, staging)
    assert refused.value.reason == "invalid_argument"


def test_a_host_without_a_staging_directory_has_staged_nothing(tmp_path):
    images = [{"id": digest("c"), "blobs": [{"digest": digest("c"), "size": 5}]}]
    assert inventory(Holding({digest("c")}, []), images, str(tmp_path / ".cache/dockyard/deliver/store-0123456789abcdef"))["staged"] == []


@pytest.mark.parametrize(
    "path",
    [
        "relative/.cache/dockyard/deliver/store-0123456789abcdef",
        "/root/.cache/dockyard/deliver/other",
        "/root/.cache/dockyard/deliver/store-notahexnumber00",
        "/srv/deliver/store-0123456789abcdef",
        "/root/.cache/dockyard/deliver/../../../../srv/.cache/dockyard/deliver/store-0123456789abcdef",
        "/etc",
    ],
)
def test_only_a_staging_directory_is_accepted(path):
    with pytest.raises(DockyardError) as failure:
        checked_staging(path)
    assert failure.value.reason == "invalid_argument"


def test_a_staging_directory_reached_through_a_link_is_refused(tmp_path):
    real = tmp_path / "elsewhere" / ".cache" / "dockyard" / "deliver" / "store-0123456789abcdef"
    real.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".cache").symlink_to(tmp_path / "elsewhere" / ".cache")
    with pytest.raises(DockyardError):
        checked_staging(str(tmp_path / "home" / ".cache" / "dockyard" / "deliver" / "store-0123456789abcdef"))


@pytest.mark.parametrize("bad", ["/tmp/victim.txt", "sha256:../../../victim.txt", "sha256:" + "a" * 63])
def test_a_digest_that_is_not_one_is_refused_before_any_path_is_made_of_it(staging, tmp_path, bad):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    with pytest.raises(DockyardError) as failure:
        inventory(Holding(set(), []), [{"id": digest("c"), "blobs": [{"digest": bad, "size": 1}]}], staging)
    assert failure.value.reason == "invalid_argument" and victim.read_text() == "keep me"


def test_a_link_named_like_a_blob_is_removed_and_never_followed(staging, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("x" * 10)
    os.symlink(victim, blob_path(staging, digest("a")))
    images = [{"id": digest("c"), "blobs": [{"digest": digest("a"), "size": len(str(victim))}]}]
    assert inventory(Holding(set(), []), images, staging)["staged"] == [], "a link of the blob's size is not a staged blob"
    assert not os.path.lexists(blob_path(staging, digest("a"))) and victim.read_text() == "x" * 10


def test_the_platform_sent_is_the_one_that_runs_best_on_the_host():
    amd64, arm64, armv7 = (record("team/app:1", digest(c), platform) for c, platform in (("1", "linux/amd64"), ("2", "linux/arm64"), ("3", "linux/arm/v7")))
    assert best_for([amd64, arm64, armv7], parse_platform("linux/arm64")) is arm64
    assert best_for([amd64, armv7], parse_platform("linux/arm/v8")) is armv7, "a compatible variant when the exact one is not held"
    assert best_for([amd64], parse_platform("linux/arm64")) is None


def test_a_staged_layout_loads_into_the_store_and_the_staging_directory_goes(tmp_path, staging):
    from ansible_collections.dockyard.images.plugins.module_utils._archive import OCI_ARCHIVE, ArchiveReader, plan_archive
    from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore
    from support.images import Image, make_layer

    image = Image([make_layer({"etc/staged": b"staged\n"})])
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "layer.tar").write_bytes(image.layers[0].tar)
    (legacy / "config.json").write_bytes(image.config)
    (legacy / "manifest.json").write_text(json.dumps([{"Config": "config.json", "RepoTags": ["registry.example/team/staged:1"], "Layers": ["layer.tar"]}]))
    with ArchiveReader(str(legacy), parse_platform("linux/amd64")) as reader:
        (made,) = reader.images
        for digest_of in (made.manifest.digest, *(descriptor.digest for descriptor in made.blobs)):
            with reader.open_blob(digest_of) as source, open(blob_path(staging, digest_of), "wb") as staged:
                staged.write(source.read())
        index = json.loads(dict(plan_archive([made], OCI_ARCHIVE).members)["index.json"])
    os.symlink(tmp_path / "victim", os.path.join(staging, "index.json"))  # never followed: replaced
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    _format, (result,) = receive(store, staging, index, parse_platform("linux/amd64"), False, 3, check_mode=False)
    assert result.error is None and result.changed and result.id == image.id
    assert not os.path.exists(staging) and not os.path.exists(tmp_path / "victim")
    assert [record.id for record in store.images()] == [image.id]
