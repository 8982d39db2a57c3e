"""The divergence engine's value helpers: references found in a state, JSON equality, and how
far behind a view is on a key (what tells lag from divergence)."""

from __future__ import annotations

import collections
import math
import random

from automerge import core as am
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.divergence import CommSource, ViewComm, find_refs, json_equal
from inspector.document import exid_hex, parse_exid
from inspector.v4.room import _op_id, obj_hex

REF = "IPY_MODEL_"


def test_references_are_found_at_any_depth_without_recursion() -> None:
    state = {"layout": REF + "a", "children": [REF + "b", {"x": (REF + "c", 3)}], "v": REF, "w": "IPY_MODE"}
    assert find_refs(state) == {"a", "b", "c"}  # the bare prefix and a near miss are not references
    deep: list = [REF + "deep"]
    for _ in range(20_000):  # far past the interpreter's recursion limit
        deep = [deep, {"k": 1}]
    assert find_refs(deep) == {"deep"}
    assert find_refs(REF + "top") == {"top"} and find_refs(5) == set() and find_refs(None) == set()


def test_json_equality_is_the_protocols() -> None:
    assert json_equal(1, 1.0) and json_equal({"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2}]})
    assert not json_equal(True, 1) and not json_equal(0, False) and not json_equal(None, 0)
    assert json_equal(math.nan, math.nan) and not json_equal(math.nan, 1.0)
    assert json_equal({"a": 1, "b": 2}, {"b": 2, "a": 1}) and not json_equal({"a": 1}, {"a": 1, "b": None})
    assert json_equal([1, 2], (1, 2)) and not json_equal([1, 2], [2, 1]) and not json_equal("1", 1)


class Reference:
    """What `behind` must answer: every value each key was put with, in order, bounded."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen, self.held = maxlen, collections.defaultdict(dict)
        self.last: dict[str, dict] = {}

    def put(self, cid: str, state: dict, reopened: bool) -> None:
        per = self.held[cid]
        old = None if reopened else self.last.get(cid)
        if old is None:
            per.clear()
        for k, v in state.items():
            if old is not None and k in old and json_equal(old[k], v):
                continue
            per.setdefault(k, collections.deque(maxlen=self.maxlen)).append(v)
        self.last[cid] = state

    def behind(self, cid: str, key: str, value: object) -> int | None:
        for i, old in enumerate(reversed(self.held[cid].get(key, ()))):
            if json_equal(old, value):
                return i or None
        return None


def _view(cid: str, state: dict, opened: float) -> ViewComm:
    return ViewComm(cid, 0, "jupyter.widget", "m", "IntSliderModel", state, opened_at=opened)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32))
def test_how_far_behind_a_view_is_matches_every_value_it_held(seed: int) -> None:
    rnd = random.Random(seed)
    src, ref = CommSource("doc", history=4), Reference(4)
    opened = {"c1": 1.0, "c2": 1.0}
    keys = ["value", "max", "desc"]
    for step in range(60):
        cid = rnd.choice(["c1", "c2"])
        reopened = rnd.random() < 0.05
        if reopened:
            opened[cid] += 1.0  # closed and opened again: its history starts over
        state = {k: rnd.choice([0, 1, 2, 1.0, True, "a"]) for k in keys if rnd.random() < 0.9}
        first = cid not in src.comms
        src.put(_view(cid, state, opened[cid]), now=float(step))
        ref.put(cid, state, reopened or first)
        for k in keys:
            for v in (0, 1, 2, True, "a"):
                assert src.behind(cid, k, v) == ref.behind(cid, k, v), (step, cid, k, v)


def test_a_value_put_once_has_no_history_and_a_lagging_view_is_told() -> None:
    src = CommSource("feed")
    src.put(_view("c", {"value": 1, "max": 10}, 1.0), now=1.0)
    assert src.behind("c", "value", 1) is None  # current, not behind
    src.put(_view("c", {"value": 2, "max": 10}, 1.0), now=2.0)
    src.put(_view("c", {"value": 3, "max": 10}, 1.0), now=3.0)
    assert src.behind("c", "value", 1) == 2 and src.behind("c", "value", 2) == 1
    assert src.behind("c", "max", 10) is None and src.behind("c", "value", 99) is None
    src.put(_view("c", {"max": 10}, 1.0), now=4.0)  # the key goes: what it held stays known
    src.put(_view("c", {"value": 4, "max": 10}, 1.0), now=5.0)
    assert src.behind("c", "value", 3) == 1


def test_the_inline_op_id_reader_agrees_with_the_generic_one_on_real_ids() -> None:
    """Op ids read inline (v4 room readers) against the generic LEB walk, on a document whose
    counters take one, two and three bytes, from two actors."""
    doc = am.Document(actor_id=b"\x01" * 16)
    with doc.transaction() as tx:
        m = tx.put_object(am.ROOT, "m", am.ObjType.Map)
    other = doc.fork()
    other.set_actor(b"\x02" * 16)
    for i in range(17_000):  # counters past 16,383 take three LEB bytes
        with doc.transaction() as tx:
            tx.put(m, f"k{i % 300}", am.ScalarType.Int, i)
    for i in range(200):  # one and two bytes, from another actor
        with other.transaction() as tx:
            tx.put(m, f"o{i}", am.ScalarType.Int, i)
    doc.merge(other)
    ids = [exid for (_v, exid) in doc.values(m)] + [m]
    assert len(ids) == 501 and len({_op_id(e)[1] for e in ids}) == 2
    for exid in ids:
        actor, counter = parse_exid(exid)
        assert _op_id(exid) == (counter, actor)
        assert obj_hex(exid) == exid_hex(exid)
    counters = [c for c, _ in map(_op_id, ids)]
    assert min(counters) < 128 and any(128 <= c < 16384 for c in counters) and max(counters) >= 16384


def test_held_notifications_reach_the_listeners_once_with_the_comms_that_went() -> None:
    src, heard = CommSource("state"), []
    src.subscribe(lambda s, ids: heard.append(set(ids)))
    src.put(_view("gone", {"value": 1}, 1.0), now=1.0)
    heard.clear()
    src.hold()
    for i in range(3):
        src.put(_view(f"c{i}", {"value": i}, 1.0), now=2.0)
    src.remove("gone", now=2.0)
    assert heard == []  # nothing while held
    src.notify(src.release() | set(src.comms))
    assert heard == [{"c0", "c1", "c2", "gone"}]  # the closed comm is not lost
    src.put(_view("c9", {"value": 9}, 1.0), now=3.0)
    assert heard[-1] == {"c9"}  # released: one notification per put again
