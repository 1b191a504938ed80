"""README examples of the core run as written (other modules' tests run their own sections)."""

from __future__ import annotations
