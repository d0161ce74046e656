# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Twin of registry_argument_spec() in plugins/module_utils/_args.py.
    DOCUMENTATION = r"""
options:
  registry_auth:
    description:
      - Credentials for registries, used before any found in O(docker_config).
      - They are sent only to the origin (scheme, host and port) of the registry they name and to the token
        service that registry's own challenge names; never to a mirror, to a redirect, pagination link or
        upload location on another origin, or over plain HTTP unless the host is loopback or in
        O(insecure_registries). They never appear in results or logs.
    type: list
    elements: dict
    suboptions:
      registry:
        description:
          - The registry, as C(host[:port]); V(docker.io) (or C(https://index.docker.io/v1/)) for Docker Hub.
        type: str
        required: true
      username:
        description: User name.
        type: str
        required: true
      password:
        description: Password or access token.
        type: str
        required: true
  docker_config:
    description:
      - Path of a docker C(config.json) to read credentials from (C(auths), C(credHelpers), C(credsStore)).
      - Defaults to C($DOCKER_CONFIG/config.json), else C(~/.docker/config.json); a missing file means no credentials.
    type: path
  mirrors:
    description:
      - Mirrors to try before a registry, as a mapping of registry (C(host[:port]), V(docker.io) for Docker Hub)
        to an ordered list of endpoint URLs such as C(https://mirror.internal:5000).
      - A mirror that fails or lacks the content falls through to the next, then to the registry itself;
        a mirror that fails for another reason than lacking the content is named in a warning.
      - A mirror gets only the credentials given for its own C(host[:port]), never the upstream's; a URL with
        C(user:password@) in it is refused (give them in O(registry_auth)), and so is one that is not a valid
        C(http(s\)://host[:port]) or C(host[:port]).
    type: dict
    default: {}
  insecure_registries:
    description:
      - Registries (C(host[:port])) that may be reached over plain HTTP or with unverified TLS, and token
        services that may receive credentials over plain HTTP.
      - Registries on loopback addresses may always be reached over plain HTTP when they do not speak TLS;
        when they do, their certificates are verified unless they are listed here.
    type: list
    elements: str
    default: []
  ca_path:
    description: A CA bundle (PEM) to verify registries' TLS certificates with.
    type: path
  validate_certs:
    description: Whether to verify registries' TLS certificates.
    type: bool
    default: true
  timeout:
    description:
      - Seconds (1 to 86400) to wait for a registry to answer, and for the store's lock.
      - Every request has a deadline. A connection must open within 10 seconds (or O(timeout) if smaller), the
        headers of an answer must arrive within O(timeout) seconds, an answer other than a blob (a manifest, a
        token, a page of tags) within O(timeout) seconds more, and a blob at 1 KiB a second or faster, measured
        over every window of O(timeout) seconds. A transfer slower than that fails with reason
        V(unreachable) at once, without retries; an interrupted blob download keeps what arrived and resumes
        from there in a later run.
      - No wait between retries is longer than O(timeout) seconds. A registry that answers HTTP 429 with a
        C(Retry-After) longer than that fails the request with reason V(rate_limited) at once.
    type: int
    default: 60
  retries:
    description:
      - How many times (0 to 100) to retry a request after a network error, an HTTP 5xx, or an HTTP 429 whose
        C(Retry-After) is at most 60 seconds. Backoff is exponential with jitter.
      - An interrupted blob download resumes where it stopped.
    type: int
    default: 4
"""
