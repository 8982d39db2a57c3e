"""Recently attached (socket, notebook) pairs, remembered across runs in a small JSON file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import platformdirs

from .. import APP_NAME


def default_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "recent.json"


class RecentConnections:
    def __init__(self, path: Path | str | None = None, limit: int = 12) -> None:
        self.path = Path(path) if path else default_path()
        self.limit = limit

    def load(self) -> list[dict[str, str | float]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [d for d in data if isinstance(d, dict) and isinstance(d.get("socket"), str)
                and isinstance(d.get("notebook"), str)]

    def add(self, socket: str, notebook: str) -> None:
        items = [d for d in self.load() if not (d["socket"] == socket and d["notebook"] == notebook)]
        items.insert(0, {"socket": socket, "notebook": notebook, "at": time.time()})
        self._write(items)

    def remove(self, socket: str, notebook: str) -> None:
        """Forget a pair that can no longer be joined (so it is not offered again)."""
        items = self.load()
        kept = [d for d in items if not (d["socket"] == socket and d["notebook"] == notebook)]
        if len(kept) != len(items):
            self._write(kept)

    def _write(self, items: list[dict[str, str | float]]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(items[: self.limit], indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # remembering is a convenience; never fail an attach over it
