"""Named faults the testbed daemon can inject to make divergence reproducible.

A fault is written `NAME[=VALUE][:SELECTOR]`, e.g. `doc-drop-update:IntSliderModel`,
`doc-skip-open:every=3` or `doc-delay-ms=250`. The selector limits the fault to comms whose
open-time model name matches, or to every Nth comm in open order (CommState seq + 1 divisible
by N, so the choice is the same after each kernel launch).
"""

from __future__ import annotations

from dataclasses import dataclass

FAULTS: dict[str, str] = {
    "doc-skip-open": "comm_open is never written to doc.comms (the comm is missing from the doc)",
    "doc-drop-update": "state updates are not written to doc.comms (doc state goes stale)",
    "doc-skip-close": "comm_close does not remove the entry (it stays in doc.comms)",
    "feed-drop-update": "the `comm` broadcast of a state update is not sent (feed goes stale)",
    "feed-drop-close": "the `comm` broadcast of a comm_close is not sent (comm stays in the feed)",
    "doc-wrong-model": "put_comm writes a wrong model_name into the doc",
    "doc-seq-duplicate": "the doc entry gets the seq of the previously opened comm",
    "doc-seq-reorder": "the doc seq of a comm is swapped with the previous comm's (order differs)",
    "doc-drop-output": "Output-widget captured outputs are not appended to comms/<id>/outputs",
    "doc-delay-ms": "doc.comms writes are applied N milliseconds late (doc-delay-ms=N)",
}

# Faults that need a value after '='.
VALUED = {"doc-delay-ms"}


class FaultError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    name: str
    value: int | None = None
    model_name: str | None = None  # selector: open-time model name
    every: int | None = None  # selector: every Nth comm in open order

    @classmethod
    def parse(cls, text: str) -> Fault:
        spec, _, selector = text.strip().partition(":")
        name, eq, raw_value = spec.partition("=")
        name = name.strip()
        if name not in FAULTS:
            raise FaultError(f"unknown fault {name!r} (see --list-faults)")
        value: int | None = None
        if name in VALUED:
            if not eq:
                raise FaultError(f"fault {name} needs a value, e.g. {name}=250")
            try:
                value = int(raw_value)
            except ValueError as exc:
                raise FaultError(f"fault {name}: {raw_value!r} is not an integer") from exc
            if value < 0:
                raise FaultError(f"fault {name}: value must be >= 0")
        elif eq:
            raise FaultError(f"fault {name} takes no value")
        model_name = every = None
        selector = selector.strip()
        if selector.startswith("every="):
            try:
                every = int(selector[len("every="):])
            except ValueError as exc:
                raise FaultError(f"bad selector {selector!r}: every=N needs an integer") from exc
            if every < 1:
                raise FaultError(f"bad selector {selector!r}: N must be >= 1")
        elif selector:
            model_name = selector
        return cls(name, value, model_name, every)

    def matches(self, model_name: str | None, seq: int | None) -> bool:
        if self.model_name is not None and model_name != self.model_name:
            return False
        if self.every is not None and (seq is None or (seq + 1) % self.every != 0):
            return False
        return True

    def __str__(self) -> str:
        text = self.name if self.value is None else f"{self.name}={self.value}"
        if self.model_name is not None:
            text += f":{self.model_name}"
        elif self.every is not None:
            text += f":every={self.every}"
        return text


class FaultSet:
    """The active faults; replaced as a whole at runtime (the GUI toggles them)."""

    def __init__(self, faults: list[Fault | str] | None = None) -> None:
        self.faults: tuple[Fault, ...] = ()
        self.set(faults or [])

    def set(self, faults: list[Fault | str]) -> None:
        self.faults = tuple(f if isinstance(f, Fault) else Fault.parse(f) for f in faults)

    def active(self, name: str, model_name: str | None = None, seq: int | None = None) -> Fault | None:
        for fault in self.faults:
            if fault.name == name and fault.matches(model_name, seq):
                return fault
        return None

    def any(self, name: str) -> bool:
        return any(f.name == name for f in self.faults)

    def __iter__(self):
        return iter(self.faults)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def describe(self) -> list[str]:
        return [f"{f}  ({FAULTS[f.name]})" for f in self.faults]


def list_faults_text() -> str:
    width = max(len(n) for n in FAULTS) + len("=N")
    lines = []
    for name, text in FAULTS.items():
        shown = f"{name}=N" if name in VALUED else name
        lines.append(f"{shown:<{width}}  {text}")
    lines.append("")
    lines.append("Selectors: NAME:MODEL_NAME (e.g. doc-drop-update:IntSliderModel) or NAME:every=N")
    return "\n".join(lines)
