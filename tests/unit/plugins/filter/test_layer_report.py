"""The layer report at fleet scale: hosts that hold the same images are one group, the outliers come
first, and the HTML page of 1,000 hosts stays small."""

from __future__ import annotations

import time
from html.parser import HTMLParser

from ansible_collections.dockyard.images.plugins.filter.fleet_layer_report import fleet_layer_report
from ansible_collections.dockyard.images.plugins.filter.render_layer_report import render_layer_report
from ansible_collections.dockyard.images.plugins.plugin_utils._report import OUTLIER_ROWS, render_html
from unit.plugins.filter.layer_report_fleets import REGISTRY, fleet_of_10, fleet_of_1000


def ref(name):
    return f"{REGISTRY}/{name}"


class Tags(HTMLParser):
    """Start tags in document order, with their attributes."""

    def __init__(self, page):
        super().__init__()
        self.tags = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def having(self, tag, css):
        return [attributes for name, attributes in self.tags if name == tag and css in (attributes.get("class") or "").split()]


def test_1000_hosts_make_three_common_groups_and_their_outliers_come_first():
    facts = fleet_of_1000()
    report = fleet_layer_report(facts)
    groups = report["groups"]
    assert sorted(host for group in groups for host in group["hosts"]) == sorted(facts)
    assert [len(group["hosts"]) for group in groups] == [4, 2, 1, 1, 1, 1, 500, 300, 190]
    assert [group["outlier"] for group in groups] == [True] * 6 + [False] * 3
    assert [group["baseline"] for group in groups] == [False] * 6 + [True, False, False]
    assert report["fleet"]["groups"] == 9 and report["fleet"]["outliers"] == 10
    web, db, batch = groups[6:]
    assert web["hosts"][0] == "web-0001" and web["compared_with"] is None and web["lacks"] == web["extra"] == []
    assert web["images"] == sorted(ref(name) for name in ("web:1.4", "api:2.0", "tools:latest", "metrics:1"))
    assert db["compared_with"] == batch["compared_with"] == 6  # a common group is compared with the baseline
    assert db["extra"] == [ref("backup:3"), ref("db:16")] and ref("web:1.4") in db["lacks"]
    found = {group["hosts"][0]: group for group in groups[:6]}
    assert found["web-0501"]["hosts"] == ["web-0501", "web-0502", "web-0503", "web-0504"]
    assert (found["web-0501"]["compared_with"], found["web-0501"]["lacks"], found["web-0501"]["extra"]) == (6, [ref("metrics:1")], [])
    assert (found["db-301"]["compared_with"], found["db-301"]["lacks"], found["db-301"]["extra"]) == (7, [], [ref("debug:latest")])
    assert (found["web-0505"]["lacks"], found["web-0505"]["extra"]) == ([ref("api:2.0")], [ref("api:1.9")])
    assert (found["web-0506"]["lacks"], found["web-0506"]["extra"], found["web-0506"]["other_ids"]) == ([], [], [ref("api:2.0")])
    assert found["batch-191"]["compared_with"] == 8 and found["batch-191"]["extra"] == [ref("cache:7")]
    assert found["batch-191"]["lacks"] == [ref("batch:5"), ref("worker:2.0")]
    # an empty store differs as little from db as from batch (3 images each): the larger group wins
    assert found["batch-192"]["images"] == [] and found["batch-192"]["compared_with"] == 7
    for group in groups:
        for kind in ("logical_bytes", "physical_bytes", "saved_bytes"):
            assert group[kind] == sum(report["hosts"][host][kind] for host in group["hosts"])
    # every per-host figure is still there
    assert len(report["hosts"]) == 1000
    assert report["hosts"]["web-0001"].keys() == {"store", "images", "layers", "logical_bytes", "physical_bytes", "saved_bytes", "shared_layers"}
    assert sum(len(image["hosts"]) for image in report["images"]) == sum(len(group["images"]) * len(group["hosts"]) for group in groups)


def test_the_page_of_1000_hosts_shows_groups_outliers_first_and_stays_small():
    report = fleet_layer_report(fleet_of_1000())
    started = time.perf_counter()
    page = render_layer_report(report, "html")
    seconds = time.perf_counter() - started
    size = len(page.encode())
    print(f"\n1,000 hosts: layers.html is {size:,} bytes, rendered in {seconds * 1000:.1f} ms")
    assert size < 2_000_000
    summary, rest = page.split("</section>", 1)
    assert "<details" not in summary and "id='outliers'" in summary and "<b>G7 · 500 hosts</b>" in summary
    tags = Tags(page)
    outliers = [int(row["data-group"]) for row in tags.having("tr", "outlier") if "group" not in row["class"].split()]
    assert outliers == [0, 1, 2, 3, 4, 5]
    rows = tags.having("tr", "group")
    assert [row["class"].split()[1] for row in rows] == ["outlier"] * 6 + ["baseline", "common", "common"]
    assert [int(row["data-hosts"]) for row in rows] == [4, 2, 1, 1, 1, 1, 500, 300, 190]
    # per-group pictures, not per-host ones; every host still in the table (folded away)
    assert not [rect for rect in tags.having("rect", "bar") if "data-host" in rect]
    bars = tags.having("rect", "logical")
    assert [int(rect["data-total"]) for rect in bars] == [group["logical_bytes"] for group in report["groups"]]
    held = tags.having("rect", "held")
    assert sum(int(cell["data-hosts"]) for cell in held) == sum(len(image["hosts"]) for image in report["images"])
    assert {cell["data-image"] for cell in tags.having("rect", "lacks") if cell["data-group"] == "0"} == {ref("metrics:1")}
    assert len([row for name, row in tags.tags if name == "tr" and "data-host" in row]) == 1000
    assert "<details id='all-hosts'><summary>All 1000 hosts</summary><table id='hosts'>" in rest


def test_the_page_of_10_hosts_still_shows_every_host_and_also_its_groups():
    report = fleet_layer_report(fleet_of_10())
    started = time.perf_counter()
    page = render_layer_report(report, "html")
    print(f"\n10 hosts: layers.html is {len(page.encode()):,} bytes, rendered in {(time.perf_counter() - started) * 1000:.1f} ms")
    tags = Tags(page)
    for host, figures in report["hosts"].items():
        [logical] = [rect for rect in tags.having("rect", "logical") if rect.get("data-host") == host]
        assert int(logical["data-bytes"]) == figures["logical_bytes"]
    assert len(tags.having("rect", "held")) == sum(len(image["hosts"]) for image in report["images"])
    assert [len(group["hosts"]) for group in report["groups"]] == [1, 1, 5, 3]
    assert [group["hosts"][0] for group in report["groups"] if group["outlier"]] == ["batch-01", "web-06"]
    assert report["groups"][1]["lacks"] == [ref("tools:latest")]
    assert "id='all-hosts'" not in page and "<table id='hosts'>" in page
    assert "## Groups of hosts that hold the same images" in render_layer_report(report, "markdown")


def test_without_a_common_group_there_is_no_baseline_and_no_outlier():
    one = {"images": [{"reference": "a", "id": "sha256:a", "size": 10, "layers": []}]}
    two = {"images": [{"reference": name, "id": f"sha256:{name}", "size": 20, "layers": []} for name in ("b", "c")]}
    report = fleet_layer_report({"h1": one, "h2": two, "h3": None})
    assert [group["hosts"] for group in report["groups"]] == [["h2"], ["h1"], ["h3"]]  # more images first, then by name
    assert not any(group["baseline"] or group["outlier"] or group["lacks"] or group["extra"] for group in report["groups"])
    assert report["fleet"]["outliers"] == 0 and "none is the baseline" in render_html(report)


def test_a_report_written_before_groups_existed_still_renders_with_them():
    report = fleet_layer_report(fleet_of_10())
    older = {key: value for key, value in report.items() if key != "groups"}
    page = render_html(older)
    assert page.count("<tr class='group ") == 4 and "<b>G3 · 5 hosts</b>" in page


def test_many_outliers_leave_the_summary_short_and_the_rest_in_the_groups_table():
    facts = fleet_of_1000()
    extra = [{"reference": f"{REGISTRY}/one-off-{n}", "id": f"sha256:{n:064x}", "size": 10, "layers": []} for n in range(40)]
    for n in range(40):  # 40 hosts, each with its own extra image: 40 outlier groups
        facts[f"web-{n + 1:04d}"]["images"] = [*facts[f"web-{n + 1:04d}"]["images"], extra[n]]
    report = fleet_layer_report(facts)
    assert report["fleet"]["outliers"] == 50 and sum(group["outlier"] for group in report["groups"]) == 46
    summary = render_html(report).split("</section>", 1)[0]
    assert summary.count("<tr class='outlier'") == OUTLIER_ROWS and f"And {46 - OUTLIER_ROWS} other outlier groups" in summary
