"""Named crash points, so tests can SIGKILL the process at an exact step.

The crash-safety tests run lakelet in a subprocess with
``LAKELET_CRASH_AT=<point>``; reaching that point kills the process the way
an operator's ``kill -9`` or a power cut would: no cleanup handlers run.
Unset (always, outside those tests), ``reached`` is one dict lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["reached"]

_CRASH_AT = os.environ.get("LAKELET_CRASH_AT", "")


def reached(point: str) -> None:
    if _CRASH_AT and point == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
