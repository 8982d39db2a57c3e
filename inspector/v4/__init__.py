"""Protocol v4 profile (runtimed 2.9.0): five documents per room, no CommSync feed.

Importing the package registers `V4Profile` with `inspector.profiles`.
"""

from .profile import V4Profile

__all__ = ["V4Profile"]
