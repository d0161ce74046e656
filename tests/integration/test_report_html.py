"""The layer report's HTML page, rendered by a real headless browser: it draws, and its pictures
carry the same numbers as layers.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import yaml

from ansible_collections.dockyard.images.plugins.plugin_utils._report import human_size
from support.ansible import REPO, run_playbook

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
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    kept = os.path.join(REPO, "tests", "output", "layers.png")
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    shutil.copy(screenshot, kept)

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
