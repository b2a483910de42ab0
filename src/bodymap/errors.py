"""User-facing errors: one line that names the file, the record and the field, and what was expected."""

from __future__ import annotations

from pathlib import Path


class BodymapError(Exception):
    """An error caused by bad input or configuration, reported to the user without a traceback."""


def input_error(file: str | Path | None, record: str | int | None, field: str | None, problem: str) -> BodymapError:
    """Build a `BodymapError` whose message reads `FILE: record R: field F: problem`.

    Any of `file`, `record`, `field` may be None when it does not apply.
    """
    parts = []
    if file is not None:
        parts.append(str(file))
    if record is not None:
        parts.append(f"record {record}")
    if field is not None:
        parts.append(f"field '{field}'")
    parts.append(problem)
    return BodymapError(": ".join(parts))
