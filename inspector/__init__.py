"""runtimed-inspector: a read-only peer that shows what a runtimed notebook room really holds."""

__version__ = "0.1.0"
APP_ID = "io.github.runtimed_inspector.RuntimedInspector"
APP_NAME = "runtimed-inspector"
