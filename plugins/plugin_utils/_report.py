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
    parts += ["<h2>Which images share which layers</h2>", _sharing_matrix(report)]
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
    images = [image["reference"] for image in report["images"]]
    cell, label = 16, 260
    out = [f"<svg id='sharing-matrix' role='img' aria-label='images by layers' width='{label + cell * len(layers) + 20}' height='{cell * len(images) + 40}'>"]
    for column in range(len(layers)):
        out.append(f"<text x='{label + column * cell + 3}' y='12'>{column + 1}</text>")
    for row, name in enumerate(images):
        y = 20 + row * cell
        out.append(f"<text x='0' y='{y + 12}'>{escape(name)}</text>")
        for column, layer in enumerate(layers):
            used = name in layer["images"]
            shared = len(layer["images"]) > 1
            color = "#2b5cab" if used and shared else "#8aa4d6" if used else "#f1f3f8"
            out.append(
                f"<rect class='cell{' used' if used else ''}' data-image='{escape(name)}' data-layer='{layer['digest']}' x='{label + column * cell}' y='{y}' "
                f"width='{cell - 2}' height='{cell - 2}' fill='{color}'>"
                f"<title>{escape(name)} / {layer['digest'][:19]} ({human_size(layer['size'])})</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)


def _presence_grid(report: dict) -> str:
    hosts = list(report["hosts"])
    images = report["images"]
    cell, label = 16, 260
    top = 10 + 6 * max([len(host) for host in hosts] + [1])  # room for the hosts' names, written upwards
    width, height = label + cell * len(hosts) + 20, top + cell * len(images) + 20
    out = [f"<svg id='presence-grid' role='img' aria-label='hosts by images' width='{width}' height='{height}'>"]
    for column, host in enumerate(hosts):
        x = label + column * cell + 11
        out.append(f"<text x='{x}' y='{top - 4}' transform='rotate(-90 {x} {top - 4})'>{escape(host)}</text>")
    for row, image in enumerate(images):
        y = top + row * cell
        out.append(f"<text x='0' y='{y + 12}'>{escape(image['reference'])}</text>")
        for column, host in enumerate(hosts):
            held = host in image["hosts"]
            out.append(
                f"<rect class='presence{' held' if held else ''}' data-image='{escape(image['reference'])}' data-host='{escape(host)}' "
                f"x='{label + column * cell}' y='{y}' width='{cell - 2}' height='{cell - 2}' fill='{'#2b5cab' if held else '#f4c7c3'}'>"
                f"<title>{escape(host)}: {'holds' if held else 'lacks'} {escape(image['reference'])}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)
