"""StageContext.memo: one value per (stage key, name, thread) in a process, released when the stage ends."""
from __future__ import annotations

import pickle
import threading
from pathlib import Path

from reidaug.pipeline import context
from reidaug.pipeline.context import StageContext, release_memo
from reidaug.pipeline.stage import NoParams


def ctx(key: str = "k" * 64) -> StageContext:
    return StageContext(stage="s", spec_name="s", key=key, params=NoParams(), inputs={}, work_dir=Path("/tmp/w"),
                        base_dir=Path("/tmp"))


def test_the_same_thread_gets_the_same_object_and_another_thread_a_new_one():
    c = ctx("a" * 64)
    first = c.memo("model", object)
    assert c.memo("model", object) is first
    assert c.memo("other", object) is not first
    assert ctx("b" * 64).memo("model", object) is not first  # another stage
    seen = []
    t = threading.Thread(target=lambda: seen.append(c.memo("model", object)))
    t.start()
    t.join()
    assert seen[0] is not first
    release_memo("a" * 64)
    release_memo("b" * 64)


def test_release_frees_the_stage_entries_only():
    a, b = ctx("c" * 64), ctx("d" * 64)
    va, vb = a.memo("m", object), b.memo("m", object)
    assert release_memo("c" * 64) == 1
    assert a.memo("m", object) is not va and b.memo("m", object) is vb
    release_memo("c" * 64)
    release_memo("d" * 64)


def test_the_cache_is_bounded_least_recently_used_first(monkeypatch):
    monkeypatch.setattr(context, "MEMO_LIMIT", 2)
    c = ctx("e" * 64)
    one = c.memo("1", object)
    c.memo("2", object)
    assert c.memo("1", object) is one  # now the most recent
    c.memo("3", object)  # evicts "2"
    assert c.memo("1", object) is one
    assert release_memo("e" * 64) == 2


def test_a_context_pickles_to_a_worker_and_memoizes_there():
    c = ctx("f" * 64)
    value = c.memo("m", object)
    copy = pickle.loads(pickle.dumps(c))
    assert copy == c and copy.memo("m", object) is value  # same process, same thread, same key
    release_memo("f" * 64)
