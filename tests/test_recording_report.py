"""Bug reports: a redacted recording holds none of the notebook's code, outputs or string
widget values (looked for in the raw bytes and in every decoded record and document), keeps
ids, structure, numbers and writers, and still opens; the report zip bundles it."""

from __future__ import annotations

import json
import shutil
import zipfile

import msgspec
import pytest
from automerge import core as am
from recording_source import SECRETS, Recorded, record_testbed

from inspector.document import actor_label, parse_exid
from inspector.recording import Checkpoint, Frame, Kernel, RecordingReader, Replicas, Seeker
from inspector.recording.redact import Redactor, redact_file, redact_records
from inspector.recording.report import build_report, summarize

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    rec = record_testbed(fault="doc-drop-update:IntSliderModel")
    yield rec
    shutil.rmtree(rec.dir, ignore_errors=True)


def final_docs(path: str) -> dict[int, dict[str, am.Document]]:
    """The documents at the end: replayed frames, or the last checkpoint of each connection
    where frames carry no bodies (a redacted recording)."""
    replicas = Replicas()
    with RecordingReader(path) as r:
        for rec in r:
            if isinstance(rec, Checkpoint):
                for name, ds in rec.docs.items():
                    replicas.conn(rec.conn).load(name, ds.saved)
            elif isinstance(rec, Frame):
                replicas.apply(rec)
    return {c: d.docs for c, d in replicas.conns.items() if d.docs}


def everything_decoded(path: str) -> str:
    """Every record and every checkpointed document, decoded, as one text."""
    parts = []
    with RecordingReader(path) as r:
        for rec in r:
            parts.append(repr(msgspec.to_builtins(rec)))
            if isinstance(rec, Frame):
                parts.append(rec.payload.decode("utf-8", "replace"))
            if isinstance(rec, Checkpoint):
                for ds in rec.docs.values():
                    parts.append(json.dumps(am.extract(am.Document.load(ds.saved)), default=str))
    return "\n".join(parts)


def cells_with_writers(doc: am.Document) -> dict[str, tuple[str, str]]:
    cells = doc.get(am.ROOT, "cells")[1]
    out = {}
    for cid in doc.keys(cells):
        obj = doc.get(cells, cid)[1]
        out[cid] = (actor_label(parse_exid(obj)[0]), doc.get(obj, "cell_type")[0][1])
    return out


def test_the_live_recording_does_hold_the_secrets(recorded: Recorded) -> None:
    # without this, the redaction test below could pass on a recording that never had them
    docs = final_docs(recorded.path)
    text = json.dumps({c: {n: am.extract(d) for n, d in ds.items()} for c, ds in docs.items()}, default=str)
    for secret in SECRETS.values():
        assert secret in text


def test_a_redacted_recording_contains_no_source_output_or_string_value(recorded: Recorded, tmp_path) -> None:
    out = str(tmp_path / "redacted.rtirec")
    redact_file(recorded.path, out)
    raw = open(out, "rb").read()
    decoded = everything_decoded(out)
    for secret in SECRETS.values():
        assert secret.encode() not in raw
        assert secret not in decoded
    # the source became its length and a hash
    source = next(c["source"] for c in recorded.snapshot["cells"] if SECRETS["source"] in c["source"])
    assert f"<redacted len={len(source)} h=" in decoded


def test_redaction_keeps_ids_structure_numbers_and_writers(recorded: Recorded, tmp_path) -> None:
    out = str(tmp_path / "redacted.rtirec")
    redact_file(recorded.path, out)
    original, redacted = final_docs(recorded.path), final_docs(out)
    conn = max(original)
    a, b = original[conn]["notebook"], redacted[conn]["notebook"]
    assert cells_with_writers(a) == cells_with_writers(b) and len(cells_with_writers(a)) == 4
    ea, eb = am.extract(a), am.extract(b)
    slider = recorded.comm_ids["IntSliderModel"]
    assert set(ea["comms"]) == set(eb["comms"]) and slider in eb["comms"]
    state_a, state_b = json.loads(ea["comms"][slider]["state"]), json.loads(eb["comms"][slider]["state"])
    assert state_a.keys() == state_b.keys()
    assert state_b["value"] == state_a["value"] and state_b["_model_name"] == "IntSliderModel"
    assert state_b["description"].startswith(f"<redacted len={len(SECRETS['description'])} ")
    for cid in ea["cells"]:
        assert ea["cells"][cid]["position"] == eb["cells"][cid]["position"]
    # the frames stay, with their sizes, directions and times; sync bodies are gone
    with RecordingReader(recorded.path) as ra, RecordingReader(out) as rb:
        fa = [x for x in ra if isinstance(x, Frame)]
        fb = [x for x in rb if isinstance(x, Frame)]
        assert [(x.conn, x.direction, x.kind, x.mono) for x in fa] == [(x.conn, x.direction, x.kind, x.mono) for x in fb]
        syncs = [(x, y) for x, y in zip(fa, fb, strict=True) if x.kind == "typed" and x.payload[:1] == b"\x00"]
        assert syncs and all(y.redacted and y.payload == b"\x00" and y.size == x.size for x, y in syncs)
        # JSON frames are rewritten, not dropped: they still decode
        for x in fb:
            if x.kind == "typed" and x.payload[:1] in (b"\x01", b"\x02", b"\x03"):
                json.loads(x.payload[1:])
        assert rb.tail is None and rb.meta == ra.meta


def test_equal_values_hash_equally_within_one_redaction_only() -> None:
    one, two = Redactor(), Redactor()
    assert one.text("hello") == one.text("hello") != two.text("hello")
    msg = {"header": {"msg_type": "stream", "msg_id": "0123456789abcdef0123"},
           "content": {"name": "stdout", "text": "my data"}}
    (k,) = redact_records([Kernel(1.0, 2.0, msg)], one)
    assert k.msg["header"] == msg["header"] and k.msg["content"]["name"] == "stdout"
    assert k.msg["content"]["text"] == one.text("my data") and "my data" not in repr(k)


def test_report_bundles_recording_snapshot_versions_and_summary(recorded: Recorded, tmp_path) -> None:
    plain = str(tmp_path / "report.zip")
    manifest = build_report(recorded.path, plain, snapshot=recorded.snapshot, divergences=recorded.divergences)
    with zipfile.ZipFile(plain) as z:
        names = set(z.namelist())
        assert names == {"manifest.json", "recording.rtirec", "snapshot.json", "versions.json", "summary.txt",
                         "divergences.json"}
        assert z.read("recording.rtirec") == open(recorded.path, "rb").read()
        versions = json.loads(z.read("versions.json"))
        assert versions["daemon"]["version"] == "2.0.0+testbed" and versions["libraries"]["automerge"] == "1.0.0rc1"
        summary = z.read("summary.txt").decode()
        slider = recorded.comm_ids["IntSliderModel"]
        assert f"comm {slider}: state_mismatch on value" in summary
        assert json.loads(z.read("manifest.json")) == manifest and not manifest["redacted"]

    red = str(tmp_path / "redacted.zip")
    build_report(recorded.path, red, snapshot=recorded.snapshot, divergences=recorded.divergences, redact=True)
    with zipfile.ZipFile(red) as z:
        for name in z.namelist():
            data = z.read(name)
            for secret in SECRETS.values():
                assert secret.encode() not in data, (name, secret)
        assert f"comm {slider}: state_mismatch on value" in z.read("summary.txt").decode()
        snap = json.loads(z.read("snapshot.json"))
        assert [c["id"] for c in snap["cells"]] == [c["id"] for c in recorded.snapshot["cells"]]
        assert json.loads(z.read("manifest.json"))["redacted"] is True


def test_summary_of_no_divergence_says_so() -> None:
    assert summarize([]) == "No divergence was reported.\n"


def test_a_redacted_recording_replays_to_the_same_structure_at_every_checkpoint(recorded: Recorded, tmp_path) -> None:
    out = str(tmp_path / "redacted.rtirec")
    redact_file(recorded.path, out)
    with RecordingReader(recorded.path) as ra, RecordingReader(out) as rb:
        conn = max(f.conn for f in ra if isinstance(f, Frame))
        frames_a = [i for i, x in ra.records() if isinstance(x, Frame)]
        frames_b = [i for i, x in rb.records() if isinstance(x, Frame)]
        sa, sb = Seeker(ra), Seeker(rb)
        compared = 0
        for k in range(0, len(frames_a), 7):  # the same frame in both recordings
            da = sa.seek(frames_a[k]).conn(conn).docs.get("notebook")
            db = sb.seek(frames_b[k] + 1).conn(conn).docs.get("notebook")  # + its checkpoint
            if da is None or da.get(am.ROOT, "cells") is None:
                continue
            assert cells_with_writers(da) == cells_with_writers(db)
            ea, eb = am.extract(da), am.extract(db)
            assert set(ea.get("comms", {})) == set(eb.get("comms", {}))
            compared += 1
        assert compared >= 5
