"""The secret values a stage is handed: in its environment for its run only, and masked as
``***`` wherever lakelet reports what the stage did — its log records while it runs, and the
text of its failure under ``lakelet.run`` (``runner._executors``)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

from lakelet.core._environ import patched_environ

__all__ = ["handed_secrets", "mask_secrets", "secret_environment"]


def mask_secrets(text: str, values: Iterable[str]) -> str:
    """``text`` with every secret value in ``values`` replaced by ``***``: as it is, and as a
    repr or JSON escapes it (a value holding a quote, a backslash or a newline)."""
    forms = {
        form for value in values if value for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1])
    }
    for form in sorted(forms, key=len, reverse=True):  # a longer form first: it may hold a shorter one
        text = text.replace(form, "***")
    return text


class _Mask(logging.Filter):
    """Replaces secret values in log records while a stage that holds them runs."""

    def __init__(self, values: list[str]) -> None:
        super().__init__()
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message, self.values)
        if masked != message:
            record.msg, record.args = masked, None
        return True


# The secret values handed to stages while ``handed_secrets`` collects them: what a runner
# masks in a failure's text before it reports it, stores it or raises it.
_HANDED: ContextVar[set[str] | None] = ContextVar("lakelet_handed_secrets", default=None)


@contextlib.contextmanager
def handed_secrets() -> Iterator[set[str]]:
    """Collects the secret values every stage run within is given (upstream stages included)."""
    handed: set[str] = set()
    token = _HANDED.set(handed)
    try:
        yield handed
    finally:
        _HANDED.reset(token)


@contextlib.contextmanager
def secret_environment(values: dict[str, str]) -> Iterator[None]:
    """The stage's secrets in os.environ for its run only, with log records masked."""
    if not values:
        yield
        return
    handed = _HANDED.get()
    if handed is not None:
        handed.update(values.values())
    mask = _Mask(list(values.values()))
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(mask)
    try:
        with patched_environ(values):
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(mask)
