"""The work bench/fanout.py fans out: module level, so worker processes import it by name."""

from __future__ import annotations

import time

import lakelet

CPU_S = 0.010  # the CPU map's items: about this much CPU each


def trivial(i):
    return i * i


def _spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def calibrate() -> int:
    """The loop count of about CPU_S of CPU here (measured once by the parent, passed to all)."""
    n = 10_000
    while True:
        t0 = time.process_time()
        _spin(n)
        took = time.process_time() - t0
        if took > 0.2:
            return max(1, int(n * CPU_S / took))
        n *= 2


def burn(i, n):
    """About CPU_S of CPU for the calibrated ``n`` (integer arithmetic, no sleep)."""
    return _spin(n) + i


trivial_stage = lakelet.stage(trivial)
burn_stage = lakelet.stage(burn)
