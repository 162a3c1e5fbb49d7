"""Named fault points, so tests can kill the process or fail a step at an exact place.

The crash-safety tests run lakelet in a subprocess with
``LAKELET_CRASH_AT=<point>``; reaching that point kills the process the way
an operator's ``kill -9`` or a power cut would: no cleanup handlers run.

``LAKELET_FAULT=<point>:<fault>`` does something else there instead, once:

- ``ENOSPC`` (or any errno name): the step fails with that ``OSError``, as a
  full disk would fail it;
- ``stop``: the process stops itself (``SIGSTOP``), so that a test waiting for
  it (``waitpid`` with ``WUNTRACED``) can change the world at that exact step
  — fill the disk, say — and let it go on with ``SIGCONT``, or kill it there.

``<point>@<n>:<fault>`` faults the n-th time the point is reached (the 3rd object
stored, say), not the first.

Unset (always, outside those tests), ``reached`` is one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["reached"]

_CRASH_AT = os.environ.get("LAKELET_CRASH_AT", "")
_FAULT_AT, _, _FAULT = os.environ.get("LAKELET_FAULT", "").partition(":")
_FAULT_AT, _, _NTH = _FAULT_AT.partition("@")
_left = int(_NTH or 1)  # times the point is still to be reached before the fault; 0: done


def reached(point: str) -> None:
    if _CRASH_AT and point == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    if _FAULT_AT and point == _FAULT_AT:
        _fault()


def _fault() -> None:
    global _left
    if _left == 0:
        return
    _left -= 1
    if _left:
        return
    if _FAULT == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    code = getattr(errno, _FAULT, None)
    if not isinstance(code, int):
        raise ValueError(f"LAKELET_FAULT: unknown fault {_FAULT!r}: use stop or an errno name (ENOSPC)")
    raise OSError(code, os.strerror(code))
