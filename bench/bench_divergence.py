"""Divergence evaluation cost per update with 20, 200 and 2,000 comms, side by side.

Each room holds N slider-like comms in a doc view and a feed view (the feed fed with real
`comm` broadcast messages through `CommFeed`, the doc with `CommView`s as the document reader
builds them). One "update" is what the daemon does for a kernel `update`: a broadcast to the
feed and the matching doc change, then one engine evaluation. The incremental engine
re-compares only the touched comm; the baseline re-compares every comm after each update.

    python bench/bench_divergence.py [--updates 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from inspector.divergence import DivergenceEngine, DocSource, FeedSource, SettleConfig
from inspector.feed import CommFeed
from inspector.protocol import messages as m
from inspector.snapshot import CommView


def _state(i: int, value: int) -> dict:
    return {"_model_module": "@jupyter-widgets/controls", "_model_name": "IntSliderModel",
            "_view_name": "IntSliderView", "description": f"slider {i}", "value": value, "min": 0,
            "max": 1000, "step": 1, "orientation": "horizontal", "readout": True,
            "layout": "IPY_MODEL_layout", "style": f"IPY_MODEL_style{i}", "disabled": False}


class Room:
    def __init__(self, n: int) -> None:
        self.feed = CommFeed()
        self.feed_src = FeedSource(self.feed)
        self.doc_src = DocSource()
        self.engine = DivergenceEngine(SettleConfig())
        self.engine.add_source(self.doc_src)
        self.engine.add_source(self.feed_src)
        self.doc: dict[str, CommView] = {}
        self.t = 1000.0
        self.ids = [f"comm-{i:05d}" for i in range(n)]
        self._bc(m.CommSync(comms=[m.CommSnapshot(comm_id="layout", target_name="jupyter.widget",
                                                  state={"_model_name": "LayoutModel"},
                                                  model_name="LayoutModel")]))
        self._doc_put("layout", {"_model_name": "LayoutModel"}, 0)
        for i in range(n):  # styles are referenced but never opened: the refs check still runs
            cid = self.ids[i]
            st = _state(i, 0)
            st["style"] = "IPY_MODEL_layout"
            self._bc(m.Comm(msg_type="comm_open", content={"comm_id": cid, "target_name": "jupyter.widget",
                                                          "data": {"state": st}}))
            self._doc_put(cid, st, i + 1)
        self.t += 1.0
        self.engine.update(self.t)
        assert not self.engine.divergences(self.t), self.engine.divergences(self.t)[:2]

    def _bc(self, bc: object) -> None:
        self.feed.apply(bc, now=self.t)
        self.feed_src.on_broadcast(bc, now=self.t)

    def _doc_put(self, cid: str, state: dict, seq: int) -> None:
        self.doc[cid] = CommView(comm_id=cid, seq=seq, target_name="jupyter.widget",
                                 model_module=state.get("_model_module", ""), model_name=state["_model_name"],
                                 state=state, state_error=None, outputs=(), writer="runtimed")
        self.doc_src.refresh([self.doc[cid]], now=self.t, changed_ids=[cid])

    def one_update(self, cid: str, value: int, naive: bool) -> float:
        """Broadcast + doc change for one kernel update; returns the seconds spent in the engine and
        its sources (the feed's own merge and building the doc CommView are outside the timing)."""
        bc = m.Comm(msg_type="comm_msg", content={"comm_id": cid, "data": {"method": "update",
                                                                          "state": {"value": value}}})
        self.feed.apply(bc, now=self.t)
        old = self.doc[cid]
        self.doc[cid] = view = CommView(comm_id=cid, seq=old.seq, target_name=old.target_name,
                                        model_module=old.model_module, model_name=old.model_name,
                                        state={**old.state, "value": value}, state_error=None, outputs=(),
                                        writer=old.writer)
        start = time.perf_counter()
        self.feed_src.on_broadcast(bc, now=self.t)
        self.doc_src.refresh([view], now=self.t, changed_ids=[cid])
        if naive:
            self.engine.reevaluate_all(self.t)
        else:
            self.engine.update(self.t)
        return time.perf_counter() - start


def measure(n: int, updates: int, naive: bool) -> tuple[float, float, int]:
    """Mean and p95 microseconds of engine work per update (source updates + evaluation), and
    comms compared per update."""
    room = Room(n)
    rng = random.Random(n)
    samples = []
    evals_before = room.engine.evaluations
    for k in range(updates):
        cid = rng.choice(room.ids)
        room.t += 0.004
        samples.append(room.one_update(cid, k + 1, naive))
    room.t += 5
    room.engine.update(room.t)
    assert not room.engine.divergences(room.t)
    samples.sort()
    per = (room.engine.evaluations - evals_before) / updates
    return statistics.fmean(samples) * 1e6, samples[int(len(samples) * 0.95)] * 1e6, round(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--naive-updates", type=int, default=200, help="updates for the full re-compare baseline")
    args = ap.parse_args()
    sizes = (20, 200, 2000)
    print(f"divergence evaluation per update ({args.updates} updates; baseline: {args.naive_updates})")
    print(f"{'comms':>6} | {'incremental mean':>16} {'p95':>9} {'compared':>8} | "
          f"{'full re-compare mean':>20} {'compared':>8} | {'ratio':>6}")
    rows = []
    measure(20, 200, naive=False)  # warm-up
    for n in sizes:
        mean, p95, per = measure(n, args.updates, naive=False)
        nmean, _np95, nper = measure(n, args.naive_updates, naive=True)
        rows.append((n, mean))
        print(f"{n:>6} | {mean:>13.1f} us {p95:>6.1f} us {per:>8} | {nmean:>17.1f} us {nper:>8} | "
              f"{nmean / mean:>5.0f}x")
    flat = rows[-1][1] / rows[0][1]
    print(f"incremental cost at 2,000 comms / at 20 comms: {flat:.2f}x (flat means ~1x)")


if __name__ == "__main__":
    main()
