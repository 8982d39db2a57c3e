"""The divergence engine's value helpers: references found in a state, JSON equality, and how
far behind a view is on a key (what tells lag from divergence)."""

from __future__ import annotations

import collections
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.divergence import CommSource, ViewComm, find_refs, json_equal

REF = "IPY_MODEL_"


def test_references_are_found_at_any_depth_without_recursion() -> None:
    state = {"layout": REF + "a", "children": [REF + "b", {"x": (REF + "c", 3)}], "v": REF, "w": "IPY_MODE"}
    assert find_refs(state) == {"a", "b", "c"}  # the bare prefix and a near miss are not references
    deep: list = [REF + "deep"]
    for _ in range(20_000):  # far past the interpreter's recursion limit
        deep = [deep, {"k": deep[0] if isinstance(deep[0], str) else 1}]
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
