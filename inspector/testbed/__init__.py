"""The testbed daemon: a runtimed-compatible server (protocol v2) with a real ipykernel,
the #808 comms dual-write and fault injection."""

from .daemon import Testbed, TestbedThread
from .faults import FAULTS, Fault, FaultSet

__all__ = ["FAULTS", "Fault", "FaultSet", "Testbed", "TestbedThread"]
