"""The desktop app: PySide6 widgets over the core's snapshot and event stream."""
