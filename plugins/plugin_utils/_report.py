# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Render a fleet layer report as Markdown or as one self-contained HTML page with inline SVG.

Controller-side only. This plugin_utils file is private to the dockyard.images collection and may
change at any time.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape


def human_size(size: int) -> str:
    """Decimal units with four significant digits, as the docker CLI prints sizes."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.4g}{unit}"
        value /= 1000
    return f"{value:.4g}TB"  # pragma: no cover


def plural(number: int, noun: str) -> str:
    """'1 layer', '3 layers'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def time_ago(created, now=None) -> str:
    if not created:
        return "N/A"
    try:
        when = datetime.fromisoformat(str(created))
    except ValueError:
        return str(created)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = max(((now or datetime.now(timezone.utc)) - when).total_seconds(), 0)
    for unit, length in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length * (2 if unit != "minute" else 1):
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "Less than a minute ago"


MATRIX_LAYERS = 40  # the largest layers get a column in the sharing matrix; the rest are summed up


def render_markdown(report: dict) -> str:
    fleet = report["fleet"]
    lines = [
        "# Layer report",
        "",
        f"{fleet['hosts']} hosts, {fleet['images']} images, {fleet['layers']} layers ({fleet['shared_layers']} shared by several images).",
        "",
        "| | logical | physical | saved by sharing |",
        "| --- | ---: | ---: | ---: |",
        f"| **fleet** | {human_size(fleet['logical_bytes'])} | {human_size(fleet['physical_bytes'])} | {human_size(fleet['saved_bytes'])} |",
    ]
    for host, figures in report["hosts"].items():
        lines.append(f"| {host} | {human_size(figures['logical_bytes'])} | {human_size(figures['physical_bytes'])} | {human_size(figures['saved_bytes'])} |")
    lines += ["", f"Every layer once, fleet-wide: {human_size(fleet['unique_bytes'])}.", "", "## Images", ""]
    lines += ["| image | size | hosts | missing on |", "| --- | ---: | ---: | --- |"]
    for image in report["images"]:
        lines.append(f"| `{image['reference']}` | {human_size(image['size'])} | {len(image['hosts'])} | {', '.join(image['missing_on']) or '-'} |")
    lines += ["", "## Shared layers", "", "| layer | size | images | hosts |", "| --- | ---: | --- | ---: |"]
    for layer in report["layers"]:
        if len(layer["images"]) > 1:
            lines.append(f"| `{layer['digest'][:19]}` | {human_size(layer['size'])} | {', '.join(layer['images'])} | {len(layer['hosts'])} |")
    return "\n".join(lines) + "\n"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1d2330;background:#fff}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #dde}th{text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #dde;border-radius:6px;padding:.8em 1.2em}
.card b{display:block;font-size:1.4em}svg text{font:11px system-ui,sans-serif;fill:#1d2330}
"""


def render_html(report: dict) -> str:
    fleet = report["fleet"]
    cards = [
        ("hosts", fleet["hosts"], "fleet-hosts"),
        ("images", fleet["images"], "fleet-images"),
        ("layers", fleet["layers"], "fleet-layers"),
        ("logical", human_size(fleet["logical_bytes"]), "fleet-logical"),
        ("physical", human_size(fleet["physical_bytes"]), "fleet-physical"),
        ("saved by sharing", human_size(fleet["saved_bytes"]), "fleet-saved"),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Layer report</title>",
        f"<style>{_STYLE}</style></head><body><h1>Layer report</h1><div class='cards'>",
    ]
    parts += [f"<div class='card' id='{ident}'>{escape(title)}<b>{escape(str(value))}</b></div>" for title, value, ident in cards]
    parts.append("</div>")
    parts += ["<h2>Logical and physical bytes per host</h2>", _bytes_chart(report)]
    parts += ["<h2>Which images share which layers</h2>", _sharing_matrix(report), _layer_legend(report)]
    parts += ["<h2>Which hosts hold which images</h2>", _presence_grid(report)]
    parts += ["<h2>Hosts</h2><table id='hosts'><tr><th>host</th><th>images</th><th>logical</th><th>physical</th><th>saved</th></tr>"]
    for host, figures in report["hosts"].items():
        parts.append(
            f"<tr data-host='{escape(host)}' data-logical='{figures['logical_bytes']}' data-physical='{figures['physical_bytes']}'>"
            f"<td>{escape(host)}</td><td class='n'>{figures['images']}</td><td class='n'>{human_size(figures['logical_bytes'])}</td>"
            f"<td class='n'>{human_size(figures['physical_bytes'])}</td><td class='n'>{human_size(figures['saved_bytes'])}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)


def _bytes_chart(report: dict) -> str:
    hosts = report["hosts"]
    widest = max([figures["logical_bytes"] for figures in hosts.values()] + [1])
    row, label, width = 22, 160, 520
    height = row * len(hosts) * 2 + 30
    out = [f"<svg id='bytes-chart' role='img' aria-label='logical and physical bytes per host' width='{label + width + 120}' height='{height}'>"]
    y = 10
    for host, figures in hosts.items():
        out.append(f"<text x='0' y='{y + 14}'>{escape(host)}</text>")
        for kind, color in (("logical", "#8aa4d6"), ("physical", "#2b5cab")):
            value = figures[f"{kind}_bytes"]
            length = max(int(width * value / widest), 1)
            out.append(
                f"<rect class='bar {kind}' data-host='{escape(host)}' data-bytes='{value}' "
                f"x='{label}' y='{y}' width='{length}' height='{row - 4}' fill='{color}'>"
                f"<title>{escape(host)} {kind}: {value} bytes</title></rect>"
                f"<text x='{label + length + 6}' y='{y + 13}'>{kind} {human_size(value)}</text>"
            )
            y += row
    out.append("</svg>")
    return "".join(out)


def _sharing_matrix(report: dict) -> str:
    layers = report["layers"][:MATRIX_LAYERS]

    def cell(name: str, column: int) -> tuple:
        layer = layers[column]
        used = name in layer["images"]
        color = ("#2b5cab" if len(layer["images"]) > 1 else "#8aa4d6") if used else "#f1f3f8"
        title = f"{name} / {layer['digest'][:19]} ({human_size(layer['size'])})"
        return "cell used" if used else "cell", {"data-image": name, "data-layer": layer["digest"]}, color, title

    names = [image["reference"] for image in report["images"]]
    return _grid("sharing-matrix", "images by layers", names, [str(n + 1) for n in range(len(layers))], cell)


def _layer_legend(report: dict) -> str:
    rows = "".join(
        f"<tr><td class='n'>{number}</td><td><code>{escape(layer['digest'][:19])}</code></td><td class='n'>{human_size(layer['size'])}</td>"
        f"<td class='n'>{len(layer['images'])}</td><td class='n'>{len(layer['hosts'])}</td></tr>"
        for number, layer in enumerate(report["layers"][:MATRIX_LAYERS], start=1)
    )
    return f"<table id='layers'><tr><th>#</th><th>layer</th><th>size</th><th>images</th><th>hosts</th></tr>{rows}</table>"


def _presence_grid(report: dict) -> str:
    hosts = list(report["hosts"])
    holders = {image["reference"]: image["hosts"] for image in report["images"]}

    def cell(name: str, column: int) -> tuple:
        host = hosts[column]
        held = host in holders[name]
        title = f"{host}: {'holds' if held else 'lacks'} {name}"
        return "presence held" if held else "presence", {"data-image": name, "data-host": host}, "#2b5cab" if held else "#f4c7c3", title

    return _grid("presence-grid", "hosts by images", list(holders), hosts, cell)


def _grid(ident: str, aria: str, rows: list, columns: list, cell) -> str:
    """An SVG grid: a label per row, a label per column written upwards, and `cell(row, column)`'s
    (classes, data attributes, colour, tooltip) for every square."""
    size, label = 16, 260
    top = 10 + 6 * max([len(name) for name in columns] + [1])
    out = [f"<svg id='{ident}' role='img' aria-label='{aria}' width='{label + size * len(columns) + 20}' height='{top + size * len(rows) + 20}'>"]
    for column, name in enumerate(columns):
        x = label + column * size + 11
        out.append(f"<text x='{x}' y='{top - 4}' transform='rotate(-90 {x} {top - 4})'>{escape(name)}</text>")
    for row, name in enumerate(rows):
        y = top + row * size
        out.append(f"<text x='0' y='{y + 12}'>{escape(name)}</text>")
        for column in range(len(columns)):
            classes, data, color, title = cell(name, column)
            attributes = "".join(f" {key}='{escape(value)}'" for key, value in data.items())
            out.append(
                f"<rect class='{classes}'{attributes} x='{label + column * size}' y='{y}' width='{size - 2}' height='{size - 2}' fill='{color}'>"
                f"<title>{escape(title)}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)
