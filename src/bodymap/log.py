"""Logging set-up and the one progress helper every long loop uses."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger for console use.

    Args:
        verbosity: -1 quiet (warnings only), 0 info, 1+ debug.
    """
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for name in ("matplotlib", "PIL", "urllib3", "botocore", "alembic", "mlflow", "git", "filelock"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def progress(
    items: Iterable[T], desc: str, total: int | None = None, logger: logging.Logger | None = None
) -> Iterator[T]:
    """Iterate with a progress bar on a terminal, or a log line every ~10% (and at the end) otherwise.

    Quiet mode (root logger above INFO) shows nothing.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    logger = logger or logging.getLogger("bodymap.progress")
    if not logger.isEnabledFor(logging.INFO):
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, dynamic_ncols=True, leave=False)
        return
    start = time.monotonic()
    step = max(1, (total or 0) // 10)
    count = 0
    for count, item in enumerate(items, start=1):
        yield item
        if total and (count % step == 0) and count < total:
            logger.info("%s: %d/%d (%.0f s)", desc, count, total, time.monotonic() - start)
    logger.info("%s: %d%s done in %.1f s", desc, count, f"/{total}" if total else "", time.monotonic() - start)
