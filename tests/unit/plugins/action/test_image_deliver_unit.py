"""image_deliver's action plugin in the worker process Ansible forks for a task, and outside one."""

from __future__ import annotations

import gc
import multiprocessing

from ansible_collections.dockyard.images.plugins.action.image_deliver import _spare_the_collector


def _frozen_after(queue) -> None:
    before = gc.get_freeze_count()
    _spare_the_collector()
    first = gc.get_freeze_count()
    left_behind = [[] for _item in range(1000)]  # what one item of a loop leaves
    _spare_the_collector()  # the next item, in the same worker
    queue.put((before, first, gc.get_freeze_count(), len(left_behind)))


def test_a_task_worker_leaves_what_it_inherited_out_of_collections_and_the_main_process_does_not():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_frozen_after, args=(queue,))
    worker.start()
    before, first, second, _made = queue.get(timeout=30)
    worker.join(30)
    assert before == 0 and first > 10_000, "the worker's inherited objects are frozen"
    assert second == first, "once: what a loop's items leave behind is collected"
    main_before = gc.get_freeze_count()
    _spare_the_collector()
    assert gc.get_freeze_count() == main_before, "a process that lives on keeps collecting everything"
