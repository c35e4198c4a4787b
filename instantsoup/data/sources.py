"""What a task names: a table file or dataset folder (your own data) rather than a task name."""
from __future__ import annotations

import os
from typing import Any

from instantsoup.data.glue import glue_task
from instantsoup.data.vision import is_vision_task


def is_table_source(task: Any) -> bool:
    """A table file (.csv/.tsv/.jsonl/.parquet ...) or a dataset folder (save_to_disk / Parquet export)
    rather than a task name ('default', a GLUE or an image task win over a folder of that name)."""
    if not isinstance(task, (str, os.PathLike)):
        return False
    task = os.fspath(task)
    if os.path.splitext(task)[1]:
        return True
    if task == "default" or is_vision_task(task) or not os.path.isdir(task):
        return False
    try:
        glue_task(task)
    except ValueError:
        return True
    return False
