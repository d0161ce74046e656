# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding images: a registry's search endpoint (Docker Hub's), else its catalog; tags on request.

Filters follow `docker search`: is_official matches exactly, stars is a minimum, and is_automated
(deprecated by Docker Hub) matches nothing when true.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._reference import OFFICIAL_REPO_PREFIX, parse_reference_or_none

CATALOG_PAGE = 100
_FILTERS = ("is_official", "is_automated", "stars")


@dataclass
class SearchResult:
    """One repository a search found."""

    name: str
    description: str = ""
    star_count: int = 0
    is_official: bool = False
    is_automated: bool = False
    tags: Optional[list] = None

    def to_dict(self) -> dict:
        result = {
            "name": self.name,
            "description": self.description,
            "star_count": self.star_count,
            "is_official": self.is_official,
            "is_automated": self.is_automated,
        }
        if self.tags is not None:
            result["tags"] = self.tags
        return result


@dataclass
class SearchRequest:
    """What a search asks for: the term, filters and how many results."""

    term: str
    limit: int = 25
    filters: dict = field(default_factory=dict)
    list_tags: bool = False
    tag_pattern: Optional[str] = None

    def validate(self) -> None:
        if not 1 <= self.limit <= 100:
            raise DockyardError("invalid_argument", f"limit {self.limit} is outside the range of [1, 100]")
        if "://" in self.term:
            raise DockyardError("invalid_argument", f"invalid search term {self.term!r}: give a name, not a URL")
        unknown = sorted(set(self.filters) - set(_FILTERS))
        if unknown:
            raise DockyardError("invalid_argument", f"unknown search filters {', '.join(unknown)}; use {', '.join(_FILTERS)}")
        try:
            self.tag_regex()
        except re.error as exc:
            raise DockyardError("invalid_argument", f"tag_pattern {self.tag_pattern!r} is not a regular expression: {exc}") from None

    def tag_regex(self):
        return re.compile(self.tag_pattern) if self.tag_pattern else None


def search(registry, request: SearchRequest) -> list:
    """Search one registry: its v1 search endpoint if it has one, else its catalog."""
    request.validate()
    term = request.term
    if registry.domain == "docker.io" and term.startswith(OFFICIAL_REPO_PREFIX):
        term = term[len(OFFICIAL_REPO_PREFIX) :]
    found = registry.search(term, request.limit)
    if found is None:
        results = [SearchResult(name) for name in registry.catalog(CATALOG_PAGE) if term.lower() in name.lower()]
    else:
        results = [_from_index(item) for item in found]
    results = [result for result in results if _passes(result, request.filters)][: request.limit]
    if request.list_tags:
        pattern = request.tag_regex()
        for result in results:
            reference = parse_reference_or_none(f"{registry.domain}/{result.name}")
            if reference is not None:  # a name no image can have (the registry's own, say) has no tags to list
                result.tags = sorted(tag for tag in registry.list_tags(reference) if pattern is None or pattern.search(tag))
    return results


def _from_index(item: dict) -> SearchResult:
    stars = item.get("star_count")
    return SearchResult(
        name=str(item.get("name") or ""),
        description=str(item.get("description") or ""),
        star_count=stars if isinstance(stars, int) else 0,
        is_official=bool(item.get("is_official")),
        is_automated=bool(item.get("is_automated")),
    )


def _passes(result: SearchResult, filters: dict) -> bool:
    if filters.get("is_official") is not None and result.is_official != filters["is_official"]:
        return False
    if filters.get("is_automated") is not None and result.is_automated != filters["is_automated"]:
        return False
    return not (filters.get("stars") is not None and result.star_count < filters["stars"])
