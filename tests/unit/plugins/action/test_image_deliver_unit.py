"""image_deliver's action plugin in the worker process Ansible forks for a task, and outside one."""

from __future__ import annotations

import gc
import multiprocessing

from ansible_collections.dockyard.images.plugins.action.image_deliver import _spare_the_collector


def _frozen_after(queue) -> None:
    before = gc.get_freeze_count()
    _spare_the_collector()
    queue.put((before, gc.get_freeze_count()))


def test_a_task_worker_leaves_what_it_inherited_out_of_collections_and_the_main_process_does_not():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_frozen_after, args=(queue,))
    worker.start()
    before, after = queue.get(timeout=30)
    worker.join(30)
    assert before == 0 and after > 10_000, "the worker's inherited objects are frozen"
    main_before = gc.get_freeze_count()
    _spare_the_collector()
    assert gc.get_freeze_count() == main_before, "a process that lives on keeps collecting everything"
