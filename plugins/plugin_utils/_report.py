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

from ansible_collections.dockyard.images.plugins.module_utils._layers import COMMON_SHARE, host_groups


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
    groups = report_groups(report)
    lines += ["", "## Groups of hosts that hold the same images", ""]
    lines += ["| group | hosts | images | compared with | lacks | extra | other ids |", "| --- | --- | ---: | --- | --- | --- | --- |"]
    for number, group in enumerate(groups[:GROUP_TABLE_ROWS]):
        versus = group["compared_with"]
        compared = "**baseline**" if group["baseline"] else "-" if versus is None else group_label(versus, groups[versus])
        kind = " (outlier)" if group["outlier"] else ""
        hosts = ", ".join(group["hosts"][:NAMES_SHOWN]) + (f" and {len(group['hosts']) - NAMES_SHOWN} more" if len(group["hosts"]) > NAMES_SHOWN else "")
        differences = " | ".join(", ".join(f"`{name}`" for name in group[key]) or "-" for key in ("lacks", "extra", "other_ids"))
        lines.append(f"| G{number + 1}{kind} | {len(group['hosts'])}: {hosts} | {len(group['images'])} | {compared} | {differences} |")
    if len(groups) > GROUP_TABLE_ROWS:
        lines.append(f"\n{plural(len(groups) - GROUP_TABLE_ROWS, 'more group')} in layers.json.")
    lines += ["", "## Shared layers", "", "| layer | size | images | hosts |", "| --- | ---: | --- | ---: |"]
    for layer in report["layers"]:
        if len(layer["images"]) > 1:
            lines.append(f"| `{layer['digest'][:19]}` | {human_size(layer['size'])} | {', '.join(layer['images'])} | {len(layer['hosts'])} |")
    return "\n".join(lines) + "\n"


HOSTS_SHOWN = 20  # up to this many hosts the pictures show every host; above, every group of identical hosts
GROUP_ROWS = 60  # groups drawn in the pictures of a larger fleet; the rest are counted in a note
GROUP_TABLE_ROWS = 200  # groups in the table of groups; the rest are counted in a note (layers.json has them all)
OUTLIER_ROWS = 8  # outlier groups in the summary at the top of the page; the table of groups has them all
NAMES_SHOWN = 3  # host names written out before "and N more"
IMAGES_SHOWN = 5  # references written out per cell of lacks, extra and other ids before "and N more"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1d2330;background:#fff}
h1{font-size:1.6em;margin:0 0 .6em}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #dde;vertical-align:top}th{text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.92em}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #dde;border-radius:6px;padding:.6em 1.1em}
.card b{display:block;font-size:1.4em}svg text{font:11px system-ui,sans-serif;fill:#1d2330}
#summary p{max-width:72em}.lacks{color:#b3261e}.extra{color:#8a5a00}.other{color:#6a3d9a}
tr.outlier td:first-child{border-left:4px solid #d9534f}tr.baseline td:first-child{border-left:4px solid #2b5cab}
tr.common .lacks,tr.common .extra{color:#454b59}
details summary{cursor:pointer}.nw{white-space:nowrap}td.hosts{min-width:16em}.names{max-width:72em;font-size:.9em;color:#454b59}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:-.1em}
"""


def render_html(report: dict) -> str:
    """One page: a summary that fits a window (cards, the baseline, the outliers), the groups of
    identical hosts, then the pictures (per host up to HOSTS_SHOWN hosts, per group above) and every
    host in a table (folded away above HOSTS_SHOWN hosts)."""
    fleet = report["fleet"]
    groups = report_groups(report)
    by_group = len(report["hosts"]) > HOSTS_SHOWN
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Layer report</title>",
        f"<style>{_STYLE}</style></head><body>",
        _summary(report, groups),
        "<h2>Groups of hosts that hold the same images</h2>",
        _groups_table(groups, image_prefix(report)),
    ]
    if by_group:
        parts += ["<h2>Logical and physical bytes per host of each group</h2>", _group_bytes_chart(groups)]
    else:
        parts += ["<h2>Logical and physical bytes per host</h2>", _bytes_chart(report)]
    parts += ["<h2>Which images share which layers</h2>", _sharing_matrix(report), _layer_legend(report)]
    if by_group:
        parts += ["<h2>Which groups hold which images</h2>", _group_grid(report, groups)]
    else:
        parts += ["<h2>Which hosts hold which images</h2>", _presence_grid(report)]
    group_of = {host: number for number, group in enumerate(groups) for host in group["hosts"]}
    table = ["<table id='hosts'><tr><th>host</th><th>group</th><th>images</th><th>logical</th><th>physical</th><th>saved</th></tr>"]
    for host, figures in report["hosts"].items():
        number = group_of.get(host)
        table.append(
            f"<tr data-host='{escape(host)}' data-logical='{figures['logical_bytes']}' data-physical='{figures['physical_bytes']}'>"
            f"<td>{escape(host)}</td><td>{'' if number is None else f'G{number + 1}'}</td><td class='n'>{figures['images']}</td>"
            f"<td class='n'>{human_size(figures['logical_bytes'])}</td><td class='n'>{human_size(figures['physical_bytes'])}</td>"
            f"<td class='n'>{human_size(figures['saved_bytes'])}</td></tr>"
        )
    table.append("</table>")
    if by_group:
        parts += [f"<h2>Hosts</h2><details id='all-hosts'><summary>All {fleet['hosts']} hosts</summary>", *table, "</details>"]
    else:
        parts += ["<h2>Hosts</h2>", *table]
    parts.append("</body></html>\n")
    return "".join(parts)


def report_groups(report: dict) -> list:
    """The report's groups of identical hosts; a report made before it had them gets them from its images."""
    if report.get("groups") is not None:
        return report["groups"]
    held = {host: {} for host in report["hosts"]}
    for image in report["images"]:
        for host in image["hosts"]:
            held.setdefault(host, {})[image["reference"]] = image.get("id")
    return host_groups(held, report["hosts"])


def group_label(number: int, group: dict) -> str:
    """'G3 · web-07' for a group of one host, 'G3 · 400 hosts' for more (numbered from 1)."""
    hosts = group["hosts"]
    return f"G{number + 1} · {hosts[0]}" if len(hosts) == 1 else f"G{number + 1} · {len(hosts)} hosts"


def _some(names: list, shown: int, code: bool = False) -> str:
    """The first `shown` names, escaped, then 'and N more'."""
    written = [f"<code>{escape(name)}</code>" if code else escape(name) for name in names[:shown]]
    more = len(names) - shown
    return ", ".join(written) + (f" and {more} more" if more > 0 else "")


def image_prefix(report: dict) -> str:
    """What every image reference of the report starts with, up to a '/' ('registry.example.com/team/'); the page
    writes the references without it, once said."""
    paths = [image["reference"].split("/")[:-1] for image in report["images"]]
    common = paths[0] if len(paths) > 1 else []
    for path in paths[1:]:
        same = 0
        while same < min(len(common), len(path)) and common[same] == path[same]:
            same += 1
        common = common[:same]
    return "".join(f"{part}/" for part in common)


def _differences(group: dict, prefix: str, shown: int = IMAGES_SHOWN) -> str:
    cells = []
    for key, css in (("lacks", "lacks"), ("extra", "extra"), ("other_ids", "other")):
        names = [name[len(prefix) :] for name in group[key]]
        cells.append(f"<td class='{css}'>{_some(names, shown, code=True) or '-'}</td>")
    return "".join(cells)


def _summary(report: dict, groups: list) -> str:
    fleet = report["fleet"]
    outliers = [(number, group) for number, group in enumerate(groups) if group["outlier"]]
    cards = [
        ("hosts", fleet["hosts"], "fleet-hosts"),
        ("images", fleet["images"], "fleet-images"),
        ("layers", fleet["layers"], "fleet-layers"),
        ("logical", human_size(fleet["logical_bytes"]), "fleet-logical"),
        ("physical", human_size(fleet["physical_bytes"]), "fleet-physical"),
        ("saved by sharing", human_size(fleet["saved_bytes"]), "fleet-saved"),
        ("groups", len(groups), "fleet-groups"),
        ("outliers", sum(len(group["hosts"]) for _number, group in outliers), "fleet-outliers"),
    ]
    parts = ["<section id='summary'><h1>Layer report</h1><div class='cards'>"]
    parts += [f"<div class='card' id='{ident}'>{escape(title)}<b>{escape(str(value))}</b></div>" for title, value, ident in cards]
    parts.append("</div>")
    baseline = next((number for number, group in enumerate(groups) if group["baseline"]), None)
    text = f"{plural(fleet['hosts'], 'host')} in {plural(len(groups), 'group')}: the hosts of a group hold exactly the same images (same references, same ids)."
    if baseline is None:
        text += f" No group has two hosts and {COMMON_SHARE:.0%} of the fleet, so none is the baseline and no host is an outlier."
    else:
        group = groups[baseline]
        text += (
            f" Baseline: <b>{escape(group_label(baseline, group))}</b> ({_some(group['hosts'], NAMES_SHOWN)}), with {plural(len(group['images']), 'image')}."
        )
        others = [group_label(number, group) for number, group in enumerate(groups) if not group["outlier"] and not group["baseline"]]
        if others:
            text += f" Other common groups: {escape(', '.join(others))}."
        if outliers:
            hosts = plural(sum(len(group["hosts"]) for _number, group in outliers), "outlier")
            text += f" <b class='lacks'>{hosts}</b> in {plural(len(outliers), 'group')} hold other images than the common group nearest to them."
        else:
            text += " No outliers: every host holds the same images as a common group."
    prefix = image_prefix(report)
    if prefix:
        text += f" Images are named without <code>{escape(prefix)}</code>."
    parts.append(f"<p id='baseline'>{text}</p>")
    if outliers:
        parts.append("<table id='outliers'><tr><th>outliers</th><th>hosts</th><th>compared with</th><th>lacks</th><th>extra</th><th>other ids</th></tr>")
        for number, group in outliers[:OUTLIER_ROWS]:
            versus = group["compared_with"]
            parts.append(
                f"<tr class='outlier' data-group='{number}'><td class='nw'>G{number + 1}</td><td class='hosts'>{_some(group['hosts'], NAMES_SHOWN)}</td>"
                f"<td class='nw'>{escape(group_label(versus, groups[versus]))}</td>{_differences(group, prefix, shown=3)}</tr>"
            )
        parts.append("</table>")
        if len(outliers) > OUTLIER_ROWS:
            parts.append(f"<p>And {plural(len(outliers) - OUTLIER_ROWS, 'other outlier group')}, first in the table of groups below.</p>")
    parts.append("</section>")
    return "".join(parts)


def _groups_table(groups: list, prefix: str) -> str:
    parts = [
        "<table id='groups'><tr><th>group</th><th>hosts</th><th>images</th><th>compared with</th><th>lacks</th><th>extra</th>"
        "<th>other ids</th><th>logical per host</th><th>physical per host</th></tr>"
    ]
    for number, group in enumerate(groups[:GROUP_TABLE_ROWS]):
        hosts, versus = group["hosts"], group["compared_with"]
        kind = "outlier" if group["outlier"] else "baseline" if group["baseline"] else "common"
        if len(hosts) == 1:
            names = escape(hosts[0])
        else:
            names = (
                f"<details><summary>{len(hosts)} hosts</summary><div class='names'>{', '.join(escape(host) for host in hosts)}</div></details>"
                f"<div class='names'>{_some(hosts, 2)}</div>"
            )
        compared = "<b>baseline</b>" if group["baseline"] else "-" if versus is None else escape(group_label(versus, groups[versus]))
        parts.append(
            f"<tr class='group {kind}' data-group='{number}' data-hosts='{len(hosts)}' data-logical='{group['logical_bytes']}'"
            f" data-physical='{group['physical_bytes']}'><td class='nw'>G{number + 1}</td><td class='hosts'>{names}</td>"
            f"<td class='n'>{len(group['images'])}</td>"
            f"<td class='nw'>{compared}</td>{_differences(group, prefix)}<td class='n'>{human_size(group['logical_bytes'] // len(hosts))}</td>"
            f"<td class='n'>{human_size(group['physical_bytes'] // len(hosts))}</td></tr>"
        )
    parts.append("</table>")
    rest = groups[GROUP_TABLE_ROWS:]
    if rest:
        hosts = plural(sum(len(group["hosts"]) for group in rest), "host")
        parts.append(f"<p>And {plural(len(rest), 'more group')} of {hosts}, in layers.json and the table of hosts.</p>")
    return "".join(parts)


def _group_bytes_chart(groups: list) -> str:
    """A row per group: its hosts' logical bytes (light) and physical bytes (dark) drawn over each other."""
    shown = groups[:GROUP_ROWS]
    widest = max([group["logical_bytes"] // len(group["hosts"]) for group in shown] + [1])
    row, label, width = 22, 160, 520
    aria = "logical and physical bytes per host of each group"
    out = [f"<svg id='bytes-chart' role='img' aria-label='{aria}' width='{label + width + 420}' height='{row * len(shown) + 20}'>"]
    for number, group in enumerate(shown):
        y, count = 10 + number * row, len(group["hosts"])
        out.append(f"<text x='0' y='{y + 13}'>{escape(group_label(number, group))}</text>")
        values = {kind: group[f"{kind}_bytes"] // count for kind in ("logical", "physical")}
        for kind, color in sorted((("logical", "#8aa4d6"), ("physical", "#2b5cab")), key=lambda pair: -values[pair[0]]):
            value = values[kind]
            out.append(
                f"<rect class='bar {kind}' data-group='{number}' data-hosts='{count}' data-bytes='{value}' data-total='{group[f'{kind}_bytes']}'"
                f" x='{label}' y='{y}' width='{max(int(width * value / widest), 1)}' height='{row - 4}' fill='{color}'>"
                f"<title>{escape(group_label(number, group))} {kind}: {value} bytes per host, {group[f'{kind}_bytes']} in all</title></rect>"
            )
        longest = max(int(width * max(values.values()) / widest), 1)
        total = f", for {count} hosts {human_size(group['logical_bytes'])} and {human_size(group['physical_bytes'])}" if count > 1 else ""
        sizes = f"logical {human_size(values['logical'])}, physical {human_size(values['physical'])}{total}"
        out.append(f"<text x='{label + longest + 6}' y='{y + 13}'>{sizes}</text>")
    out.append("</svg>")
    out.append(
        "<p class='legend'><span style='background:#8aa4d6'></span>logical bytes per host<span style='background:#2b5cab'></span>physical bytes per host</p>"
    )
    if len(groups) > GROUP_ROWS:
        out.append(f"<p>The {plural(len(groups) - GROUP_ROWS, 'other group')} are in the table of groups and in layers.json.</p>")
    return "".join(out)


def _group_grid(report: dict, groups: list) -> str:
    """The images (rows) each group (columns) holds; for an outlier group, also what it lacks, holds extra or holds with
    another id against the common group it is compared with."""
    shown = groups[:GROUP_ROWS]
    labels = [group_label(number, group) for number, group in enumerate(shown)]

    def cell(name: str, column: int) -> tuple:
        group = shown[column]
        held = name in group["images"]
        if not group["outlier"]:
            classes, color, what = ("presence held", "#2b5cab", "holds") if held else ("presence", "#f1f3f8", "does not hold")
        elif name in group["other_ids"]:
            classes, color, what = "presence held other-id", "#9b7fc4", "holds another id of"
        elif name in group["extra"]:
            classes, color, what = "presence held extra", "#e0a030", "holds, as extra,"
        elif held:
            classes, color, what = "presence held", "#2b5cab", "holds"
        elif name in group["lacks"]:
            classes, color, what = "presence lacks", "#d9534f", "lacks"
        else:
            classes, color, what = "presence", "#f1f3f8", "does not hold"
        data = {"data-image": name, "data-group": str(column), "data-hosts": str(len(group["hosts"]))}
        return classes, data, color, f"{labels[column]}: {what} {name}"

    names = [image["reference"] for image in report["images"]]
    out = [_grid("presence-grid", "groups by images", names, labels, cell, len(image_prefix(report)))]
    out.append(
        "<p class='legend'><span style='background:#2b5cab'></span>held<span style='background:#f1f3f8;outline:1px solid #dde'></span>not held"
        " &nbsp; outliers, against the common group they are compared with:<span style='background:#d9534f'></span>lacked"
        "<span style='background:#e0a030'></span>held extra<span style='background:#9b7fc4'></span>held with another id</p>"
    )
    if len(groups) > GROUP_ROWS:
        out.append(f"<p>The {plural(len(groups) - GROUP_ROWS, 'other group')} are in the table of groups and in layers.json.</p>")
    return "".join(out)


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
    return _grid("sharing-matrix", "images by layers", names, [str(n + 1) for n in range(len(layers))], cell, len(image_prefix(report)))


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

    return _grid("presence-grid", "hosts by images", list(holders), hosts, cell, len(image_prefix(report)))


def _grid(ident: str, aria: str, rows: list, columns: list, cell, cut: int = 0) -> str:
    """An SVG grid: a label per row (without its first `cut` characters), a label per column written
    upwards, and `cell(row, column)`'s (classes, data attributes, colour, tooltip) for every square."""
    size, label = 16, 260
    top = 10 + 6 * max([len(name) for name in columns] + [1])
    out = [f"<svg id='{ident}' role='img' aria-label='{aria}' width='{label + size * len(columns) + 20}' height='{top + size * len(rows) + 20}'>"]
    for column, name in enumerate(columns):
        x = label + column * size + 11
        out.append(f"<text x='{x}' y='{top - 4}' transform='rotate(-90 {x} {top - 4})'>{escape(name)}</text>")
    for row, name in enumerate(rows):
        y = top + row * size
        out.append(f"<text x='0' y='{y + 12}'>{escape(name[cut:])}</text>")
        for column in range(len(columns)):
            classes, data, color, title = cell(name, column)
            attributes = "".join(f" {key}='{escape(value)}'" for key, value in data.items())
            out.append(
                f"<rect class='{classes}'{attributes} x='{label + column * size}' y='{y}' width='{size - 2}' height='{size - 2}' fill='{color}'>"
                f"<title>{escape(title)}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)
