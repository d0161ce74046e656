"""The layer report's HTML page, rendered by a real headless browser: it draws, and its pictures
carry the same numbers as layers.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser

import yaml

from ansible_collections.dockyard.images.plugins.filter.fleet_layer_report import fleet_layer_report
from ansible_collections.dockyard.images.plugins.filter.render_layer_report import render_layer_report
from ansible_collections.dockyard.images.plugins.plugin_utils._report import human_size
from support.ansible import REPO, run_playbook
from unit.plugins.filter.layer_report_fleets import fleet_of_10, fleet_of_1000

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Elements(HTMLParser):
    """Every element of the rendered DOM with its attributes, and the text of the cards."""

    def __init__(self):
        super().__init__()
        self.elements, self.cards, self._card = [], {}, None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "div" and attributes.get("class") == "card":
            self._card = attributes["id"]

    def handle_data(self, data):
        if self._card and data.strip():
            self.cards[self._card] = data.strip()

    def handle_endtag(self, tag):
        if tag == "b":
            self._card = None

    def having(self, tag, **wanted):
        return [a for t, a in self.elements if t == tag and all(v in (a.get(k) or "").split() if k == "class" else a.get(k) == v for k, v in wanted.items())]


def keep(screenshot, name):
    """Check a screenshot and keep it in tests/output, where a person can look at it."""
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    kept = os.path.join(REPO, "tests", "output", name)
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    shutil.copy(screenshot, kept)
    return kept


def chromium(profile, *args):
    done = subprocess.run(
        [shutil.which("chromium") or "/usr/bin/chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_html_report_renders_and_shows_the_numbers_of_the_json(registry, corpus, tmp_path):
    hosts = {"web-1": ["app:1", "worker:1"], "web-2": ["app:1"], "batch-1": ["worker:1", "multi:1"]}
    inventory = {
        "all": {
            "hosts": {
                host: {
                    "ansible_connection": "local",
                    "prewarm_store_path": str(tmp_path / host),
                    "prewarm_images": [f"{registry.host}/team/{i}" for i in images],
                }
                for host, images in hosts.items()
            }
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    report_dir = tmp_path / "report"
    done = run_playbook(
        os.path.join(REPO, "playbooks", "prewarm.yml"),
        {"prewarm_store": "oci", "layer_report_dir": str(report_dir)},
        args=["-i", str(tmp_path / "inventory.yml")],
    )[0]
    assert done.returncode == 0, done.stdout
    report = json.loads((report_dir / "layers.json").read_text())
    page = f"file://{report_dir / 'layers.html'}"

    screenshot = tmp_path / "layers.png"
    chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,1600", page)
    keep(screenshot, "layers.png")

    dom = Elements()
    dom.feed(chromium(tmp_path / "profile", "--dump-dom", page))
    fleet = report["fleet"]
    assert dom.cards["fleet-hosts"] == str(fleet["hosts"]) == "3"
    assert dom.cards["fleet-logical"] == human_size(fleet["logical_bytes"])
    assert dom.cards["fleet-physical"] == human_size(fleet["physical_bytes"])
    assert dom.cards["fleet-saved"] == human_size(fleet["saved_bytes"])
    for host, figures in report["hosts"].items():
        for kind in ("logical", "physical"):
            [rect] = dom.having("rect", **{"class": kind, "data-host": host})
            assert int(rect["data-bytes"]) == figures[f"{kind}_bytes"]
    used = dom.having("rect", **{"class": "used"})
    assert len(used) == sum(len(layer["images"]) for layer in report["layers"])
    held = dom.having("rect", **{"class": "held"})
    assert len(held) == sum(len(image["hosts"]) for image in report["images"]) == 5
    missing = {image["reference"]: image["missing_on"] for image in report["images"]}
    assert missing[f"{registry.host}/team/app:1"] == ["batch-1"]


# Appended to a copy of the page (the page itself runs no script): once it has loaded, write into the
# DOM where the summary ends, where the first <details> starts, the window, and how many elements
# the page has, for --dump-dom to carry out.
PROBE = """<script>
addEventListener("load", () => {
  const root = document.documentElement, summary = document.getElementById("summary"), first = document.querySelector("details");
  root.dataset.viewportHeight = innerHeight;
  root.dataset.viewportWidth = innerWidth;
  root.dataset.summaryBottom = Math.ceil(summary.getBoundingClientRect().bottom + scrollY);
  root.dataset.summaryWidth = Math.ceil(summary.scrollWidth);
  root.dataset.detailsTop = first ? Math.floor(first.getBoundingClientRect().top + scrollY) : -1;
  root.dataset.elements = document.getElementsByTagName("*").length;
  root.dataset.loadedMs = Math.round(performance.now());
});
</script>"""
WINDOW = (1280, 800)  # a laptop's window; the summary of any fleet must fit in it


def measured(profile, page):
    """The probe's figures for `page`, from the DOM Chromium dumps in a WINDOW-sized window."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    started = time.perf_counter()
    dom = Elements()
    dom.feed(chromium(profile, f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", f"file://{probe}"))
    seconds = time.perf_counter() - started
    [root] = [attributes for tag, attributes in dom.elements if tag == "html"]
    figures = {key[5:]: int(value) for key, value in root.items() if key.startswith("data-")}
    assert figures.keys() >= {"viewport-height", "summary-bottom", "details-top", "elements", "loaded-ms"}, root
    return dom, figures, seconds


def test_the_pages_of_10_and_1000_hosts_read_at_a_glance(tmp_path):
    for name, facts in (("10", fleet_of_10()), ("1000", fleet_of_1000())):
        report = fleet_layer_report(facts)
        started = time.perf_counter()
        html = render_layer_report(report, "html")
        rendered = time.perf_counter() - started
        folder = tmp_path / f"fleet-{name}"
        folder.mkdir()
        page = folder / "layers.html"
        page.write_text(html)
        (folder / "layers.json").write_text(json.dumps(report, indent=4))
        assert page.stat().st_size < 2_000_000

        shots = [(f"layers-{name}-hosts.png", "1280,1600" if name == "10" else "1280,2400")]
        if name == "1000":
            shots.append(("layers-1000-hosts-window.png", f"{WINDOW[0]},{WINDOW[1]}"))  # what opening the page shows
        for shot, size in shots:
            chromium(tmp_path / "profile", f"--screenshot={folder / shot}", f"--window-size={size}", f"file://{page}")
            keep(folder / shot, shot)

        dom, figures, opened = measured(tmp_path / "profile", page)
        print(
            f"\n{name} hosts: layers.html {page.stat().st_size:,} bytes, layers.json {(folder / 'layers.json').stat().st_size:,} bytes,"
            f" rendered in {rendered * 1000:.0f} ms; Chromium: {figures['elements']:,} elements, loaded after {figures['loaded-ms']} ms,"
            f" --dump-dom took {opened:.1f} s; summary ends at {figures['summary-bottom']} px, first <details> at {figures['details-top']} px"
            f" of a {figures['viewport-height']} px window"
        )
        # a page Chromium opens quickly: a bounded number of elements (a size check; the times are only printed)
        assert figures["elements"] < 20_000
        # what opening the page shows before any <details>: the summary, no wider and no taller than the window
        assert figures["viewport-height"] <= WINDOW[1] and figures["viewport-width"] <= WINDOW[0]
        assert 0 < figures["summary-bottom"] <= figures["viewport-height"]
        assert figures["summary-width"] <= figures["viewport-width"]
        assert figures["summary-bottom"] <= figures["details-top"] <= figures["viewport-height"]

        fleet, groups = report["fleet"], report["groups"]
        assert dom.cards["fleet-hosts"] == str(fleet["hosts"]) == name
        assert dom.cards["fleet-groups"] == str(len(groups)) and dom.cards["fleet-outliers"] == str(fleet["outliers"])
        rows = dom.having("tr", **{"class": "group"})
        assert [int(row["data-hosts"]) for row in rows] == [len(group["hosts"]) for group in groups]
        assert [int(row["data-logical"]) for row in rows] == [group["logical_bytes"] for group in groups]
        assert [row["class"].split()[1] for row in rows] == sorted((row["class"].split()[1] for row in rows), key=lambda kind: kind != "outlier")
        summary_rows = [int(row["data-group"]) for row in dom.having("tr", **{"class": "outlier"}) if "group" not in row["class"].split()]
        assert summary_rows == [number for number, group in enumerate(groups) if group["outlier"]][:8]
        hosts = {row["data-host"]: int(row["data-logical"]) for row in dom.having("tr") if "data-host" in row}
        assert hosts == {host: figures["logical_bytes"] for host, figures in report["hosts"].items()}
        held = dom.having("rect", **{"class": "held"})
        if name == "10":  # a small fleet: a bar per host, a column per host
            for host, figures in report["hosts"].items():
                [rect] = dom.having("rect", **{"class": "physical", "data-host": host})
                assert int(rect["data-bytes"]) == figures["physical_bytes"]
            assert len(held) == sum(len(image["hosts"]) for image in report["images"])
        else:  # a bar per group, a column per group
            for number, group in enumerate(groups):
                [rect] = dom.having("rect", **{"class": "physical", "data-group": str(number)})
                assert int(rect["data-total"]) == group["physical_bytes"] and int(rect["data-hosts"]) == len(group["hosts"])
            assert sum(int(cell["data-hosts"]) for cell in held) == sum(len(image["hosts"]) for image in report["images"])
            assert len(dom.having("rect", **{"class": "bar"})) == 2 * len(groups)
