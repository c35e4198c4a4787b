"""Low-level file writing and reading, below everything that stores files (masks, run directories,
tickets): atomic writes with the mode the umask gives, and the byte-reproducible safetensors
writer with its reader. Nothing here imports another instantsoup module."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by mkstemp/mkdtemp (mode 0600/0700) the mode a plain open() would give."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file + os.replace)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes | list[bytes]) -> None:
    """Write a file atomically (temp file next to it + fsync + os.replace); mode from the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_ST_DTYPES = {"uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16", "uint32": "U32", "int32": "I32",
              "uint64": "U64", "int64": "I64", "float16": "F16", "float32": "F32", "float64": "F64",
              "bool": "BOOL"}


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict | None = None) -> list[bytes]:
    """The safetensors encoding of ``arrays`` (in their order) with string ``metadata``, byte-for-
    byte the same for the same input: the JSON header has sorted keys (safetensors' own writer
    emits the metadata map in hash order, so two runs of the same command differed)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    bufs, off = [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.name not in _ST_DTYPES:
            raise TypeError(f"{name}: dtype {a.dtype} cannot be stored in safetensors")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        header[str(name)] = {"dtype": _ST_DTYPES[a.dtype.name], "shape": list(a.shape),
                             "data_offsets": [off, off + a.nbytes]}
        bufs.append(a.tobytes())
        off += a.nbytes
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return [len(blob).to_bytes(8, "little"), blob, *bufs]


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write a safetensors file atomically and reproducibly (see :func:`safetensors_bytes`)."""
    atomic_write_bytes(path, safetensors_bytes(arrays, metadata))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file; a damaged or foreign file is a ValueError naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
