# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One way through a batch of images, for pulls into every store and for copies.

Every image of a task is planned at once (resolving is a few small requests, bound by round trips
rather than bandwidth); an image's failure is its own, a DockyardError that names it, kept in its
result while the other images go on; and the blobs a batch moves start largest first, since the
largest bounds the whole transfer.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor

Item = TypeVar("Item")
RESOLVE_WORKERS = 8


def resolve_workers(images: int) -> int:
    """Threads that resolve `images` images at once; the connection pool must hold as many."""
    return max(1, min(images, RESOLVE_WORKERS))


def safely(function: Callable[..., object]) -> Callable[..., Optional[DockyardError]]:
    """`function(item, ...)` returning its DockyardError, naming the item's image, instead of raising it.
    An item is anything with `request.reference`: a plan, or a result."""

    def run(item, *args) -> Optional[DockyardError]:
        try:
            function(item, *args)
            return None
        except DockyardError as exc:
            return exc.with_context(item.request.reference.familiar)

    return run


def each(items: list[Item], function: Callable[[Item], object], workers: Optional[int] = None) -> Iterator[tuple[Item, Optional[DockyardError]]]:
    """Run `function` on every item in a pool (by default sized for resolving, one thread per image
    up to a bound); yield each item with its failure or None, in order, each as soon as it and the
    items before it are done, so that work on the first images starts while the rest resolve."""
    threads = workers if workers is not None else resolve_workers(len(items))
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dockyard-batch") as pool:
        yield from zip(items, pool.map(safely(function), items))


def largest_first(descriptors: Iterable[Descriptor]) -> list[Descriptor]:
    return sorted(descriptors, key=lambda descriptor: -descriptor.size)
