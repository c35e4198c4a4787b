"""The one exception type for bad data files: it names the file and the line (or row)."""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file could not be read as asked.

    The message starts with ``path:line:`` (or ``path: row N:`` for Parquet) so that editors and
    terminals can jump to the spot. ``path``, ``line`` and ``reason`` are kept as attributes.
    """

    def __init__(self, path: "str | os.PathLike[str] | None", line: Optional[int], reason: str,
                 *, row: Optional[int] = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.row = row
        self.reason = reason
        where = self.path if self.path is not None else "<data>"
        if line is not None:
            where = f"{where}:{line}"
        elif row is not None:
            where = f"{where}: row {row}"
        super().__init__(f"{where}: {reason}")
