"""The garbage collector of a server's process: the start-up heap frozen out of collections, the
young generation collected less often, and cycles still collected."""

from __future__ import annotations

import gc
import weakref

import pytest
from pydantic import ValidationError

from services import garbage_collector
from shared.settings import Settings


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def restored_collector():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_the_start_up_heap_is_frozen_and_cycles_are_still_collected():
    before = Node()
    garbage_collector.settle(young_threshold=5_000)

    assert gc.get_threshold()[0] == 5_000
    assert gc.get_freeze_count() > 0
    assert not any(obj is before for obj in gc.get_objects())  # never walked again

    gone = Node()
    dead = weakref.ref(gone)
    del gone
    young = [[] for _ in range(300)]  # well under the threshold: not collected yet
    assert dead() is not None
    young += [[] for _ in range(10_000)]  # over it: a young collection frees the cycle
    assert dead() is None


def test_the_threshold_is_a_setting_with_a_floor():
    assert Settings().gc_young_threshold == 20_000
    with pytest.raises(ValidationError):
        Settings(gc_young_threshold=0)  # 0 would turn the collector off
