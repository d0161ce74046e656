# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image references in filters: a reference that does not parse fails the template with the rule it breaks.

Controller-side only. This plugin_utils file is private to the dockyard.images collection and may
change at any time.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, parse_reference


def filter_reference(text) -> Reference:
    """The parsed reference, or an AnsibleFilterError that says what is wrong with `text`."""
    try:
        return parse_reference(text)
    except DockyardError as exc:
        raise AnsibleFilterError(exc.message) from None
