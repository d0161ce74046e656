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
      - V(docker) and V(podman) are the image stores of a Docker Engine or of Podman, reached through the
        Engine API on the unix socket O(docker_host). Pulls then go through the engine, so images land
        where containers run.
      - V(containerd) is containerd's image store in the namespace O(containerd_namespace) (by default
        C(k8s.io), the one the kubelet reads), reached on the socket O(containerd_address) through
        containerd's gRPC API, and the C(ctr) client that ships with containerd to import and remove
        images. The collection fetches and verifies every blob itself and stores only the blobs
        containerd lacks, unpacked for one platform; containerd never contacts a registry, and no
        credential is given to it.
      - V(auto) uses the OCI store when O(store_path) is given; otherwise the engine whose socket answers
        (O(docker_host), E(DOCKER_HOST), C(/var/run/docker.sock), then Podman's socket); otherwise containerd
        when its socket O(containerd_address) exists and answers; otherwise the OCI store.
      - Results always say which store was used.
    type: str
    default: auto
    choices: [auto, oci, docker, podman, containerd]
  store_path:
    description:
      - Directory of the OCI image layout.
      - Defaults to C(/var/lib/dockyard/oci) when running as root, otherwise
        C(~/.local/share/dockyard/oci) (or under E(XDG_DATA_HOME)).
    type: path
  docker_host:
    description:
      - The engine's socket, as C(unix:///path/to/socket), for O(store=docker) or O(store=podman).
      - Defaults to E(DOCKER_HOST), else C(unix:///var/run/docker.sock); for Podman C(unix:///run/podman/podman.sock)
        as root, else C(unix://$XDG_RUNTIME_DIR/podman/podman.sock).
    type: str
  containerd_address:
    description:
      - The socket of containerd, for O(store=containerd), as a path or C(unix://) and a path.
      - k3s and RKE2 run their own containerd, at C(/run/k3s/containerd/containerd.sock).
    type: str
    default: /run/containerd/containerd.sock
  containerd_namespace:
    description:
      - The containerd namespace the images go to and are listed and removed from, for O(store=containerd).
      - C(k8s.io) is the namespace the CRI plugin serves to the kubelet.
      - containerd deletes the layers no image references by itself, so with O(store=containerd) a removal
        frees them even with C(prune=false); C(bytes_freed) counts what left the content store.
    type: str
    default: k8s.io
"""
