# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Twin of store_argument_spec() in plugins/module_utils/_args.py.
    DOCUMENTATION = r"""
options:
  store:
    description:
      - Where images live on the host.
      - V(oci) is the embedded store, an OCI image layout directory at O(store_path) that skopeo,
        podman, umoci and containerd can read.
      - V(auto) uses the embedded OCI store.
    type: str
    default: auto
    choices: [auto, oci]
  store_path:
    description:
      - Directory of the OCI image layout.
      - Defaults to C(/var/lib/dockyard/oci) when running as root, otherwise
        C(~/.local/share/dockyard/oci) (or under E(XDG_DATA_HOME)).
    type: path
"""
