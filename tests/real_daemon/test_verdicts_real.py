"""Verdicts of `check --kernel-connection auto` on the real runtimed 2.9.0, as a widget library's
CI would run it: the classes of the regression corpus (tests/fixtures/verdicts/) with other widget
kinds, sizes and orders. Ordinary code exits 0 (warnings are notes); a late joiner exits 13
and says what it cannot know; a real divergence exits 1."""

from __future__ import annotations

import json

import pytest

from inspector.divergence import DivergenceOptions
from inspector.errors import EXIT_DIVERGED, EXIT_OK, EXIT_UNKNOWN
from inspector.session import PeerSession, SessionConfig

from .conftest import RoomDriver
from .test_v4_check_and_tap import run_check

# variations on the corpus: other widget kinds, sizes and orders
ORDINARY = {
    # a box shown empty, filled afterwards, with other kinds than the corpus's
    "grid_filled_later": "import ipywidgets as w\ng = w.GridBox(layout=w.Layout(grid_template_columns='1fr 1fr'))\n"
                         "display(g)\ng.children = [w.Dropdown(options=['a','b']), w.ColorPicker(),"
                         " w.FloatRangeSlider(), w.ToggleButtons(options=['x','y'])]",
    # interact with a different signature, then a second interact reusing the widgets
    "interact_manual": "from ipywidgets import interact_manual, interactive\nimport ipywidgets as w\n"
                       "ui = interactive(lambda a=1.5, b=True: a, a=(0.0, 3.0))\ndisplay(ui)\n"
                       "interact_manual(lambda t='x': t, t='hello')",
    # a tab whose child is closed after display, and an accordion emptied of a closed child
    "closed_in_tab": "import ipywidgets as w\nc = w.Textarea('x')\nt = w.Tab([c, w.Button(description='b')])\n"
                     "display(t)\nc.close()\na = w.Accordion([w.Checkbox()])\ndisplay(a)\na.children[0].close()",
    # 120 mixed widgets in one cell, displayed inside nested boxes, linked pairwise
    "mixed_120": "import ipywidgets as w\nks = [w.IntText, w.FloatSlider, w.Checkbox, w.Text]\n"
                 "ws = [ks[i % 4]() for i in range(120)]\n"
                 "ls = [w.jslink((ws[i], 'value'), (ws[i + 4], 'value')) for i in range(0, 20, 4)]\n"
                 "display(w.VBox([w.HBox(ws[i:i + 10]) for i in range(0, 120, 10)]))",
    # Output capture with clear_output in between
    "output_clear": "import ipywidgets as w\no = w.Output()\ndisplay(o)\nwith o:\n    print('a')\n"
                    "o.clear_output()\nwith o:\n    print('b')\n    display(w.IntProgress(value=3))",
}


@pytest.fixture()
def kernel_room(real_socket):
    """A fresh room with a running kernel and no widgets: check attaches before any comm opens."""
    drv = RoomDriver(real_socket)
    try:
        drv.notebook_id = drv.call(op="create")["notebook_id"]
        assert drv.call(op="run", source="import ipywidgets\n1")["success"]
        yield drv
    finally:
        drv.close()


@pytest.mark.parametrize("name", sorted(ORDINARY))
async def test_ordinary_widget_code_passes_check(real_socket, kernel_room, name):
    code = ORDINARY[name]

    async def run():
        res = await kernel_room.acall(op="run", source=code)
        assert res["success"], res

    rc, out, err = await run_check(real_socket, kernel_room.notebook_id, 8.0, "--json",
                                   "--kernel-connection", "auto", during=run)
    result = json.loads(out)
    assert rc == EXIT_OK, (result["diverged"], err)
    assert result["status"] == "settled" and result["unknown"] == {}
    assert "kernel" in result["sources"]
    # warnings are notes, never failures; they fail with --strict
    assert all(d["severity"] in ("warn", "info") for d in result["info"])


async def test_a_late_joiner_exits_unknown_and_says_why(real_socket):
    drv = RoomDriver(real_socket)
    try:
        nb = drv.call(op="create")["notebook_id"]
        assert drv.call(op="run", source="import ipywidgets as w\nd = w.Dropdown(options=['p', 'q'], value='p')\n"
                                          "display(d)")["success"]
        s = PeerSession(SessionConfig(real_socket, nb, divergence=DivergenceOptions()))
        async with s.running():
            await s.wait_settled(0.3, 30)
            (dd,) = [c.comm_id for c in s.snapshot().comms if c.model_name == "DropdownModel"]
        await drv.acall(op="send_comm", comm_id=dd, state={"index": 1})  # the kernel moves before check attaches
        rc, out, err = await run_check(real_socket, nb, 2.0, "--kernel-connection", "auto")
        assert rc == EXIT_UNKNOWN, (out, err)
        assert any(ln.startswith("unknown: kernel view unknown for ") and "opened before it attached" in ln
                   for ln in out.splitlines()), out
        assert "no divergence seen, but kernel view unknown" in err
    finally:
        drv.close()


async def test_a_real_divergence_after_a_burst_is_reported(real_socket, kernel_room):
    """200 widgets made at once, then a send_comm the CommsDoc never takes: exit 1 on that one."""
    nb = kernel_room.notebook_id

    async def run():
        res = await kernel_room.acall(op="run", source="import ipywidgets as w\nbb = [w.Button() for _ in range(200)]\n"
                                                        "tb = w.ToggleButton(value=False)\ndisplay(tb)")
        assert res["success"], res
        s = PeerSession(SessionConfig(real_socket, nb, divergence=DivergenceOptions()))
        async with s.running():
            await s.wait_settled(0.3, 30)
            (tb,) = [c.comm_id for c in s.snapshot().comms if c.model_name == "ToggleButtonModel"]
        await kernel_room.acall(op="send_comm", comm_id=tb, state={"value": True})

    rc, out, err = await run_check(real_socket, nb, 45.0, "--json", "--kernel-connection", "auto", during=run)
    result = json.loads(out)
    assert rc == EXIT_DIVERGED, (result, err)
    kinds = {(d["model_name"], d["kind"]) for d in result["diverged"]}
    assert kinds == {("ToggleButtonModel", "state_mismatch")}, kinds
