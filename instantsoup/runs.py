"""Run directories: named from a hash of the settings, written atomically, resumable.

Layout of one run::

    <out>/<method>-<hash12>/
        settings.json          the settings + model and data identity (the hash input)
        history.jsonl          one JSON record per event (evaluations, rounds, stages)
        round_000/ ...         one folder per finished round/stage, each written atomically:
            state.json         global step, round, RNG seeds, data position, history, cost
            masks.safetensors  the masks in force (HF names, uint8, 1 = kept)
            weights.safetensors  model.state_dict()
            optim.safetensors  opt.state_dict() arrays (+ optim.json for its scalars)
        ticket/                the result (masks.safetensors, metrics.json, ticket.json, checkpoint/)

A stage whose folder exists is finished and is never recomputed; ``resume`` restarts after the last
finished folder. All randomness is re-derived from (seed, round, step) at the start of every stage,
so a resumed run repeats exactly what an uninterrupted run would have done.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger(__name__)

# ---- path helpers (one place) -----------------------------------------------------------------
def settings_path(root: Path) -> Path: return Path(root) / "settings.json"  # noqa: E704
def history_path(root: Path) -> Path: return Path(root) / "history.jsonl"  # noqa: E704
def stage_path(root: Path, name: str) -> Path: return Path(root) / name  # noqa: E704
def round_name(i: int) -> str: return f"round_{i:03d}"  # noqa: E704
def ticket_path(root: Path) -> Path: return Path(root) / "ticket"  # noqa: E704
def masks_file(d: Path) -> Path: return Path(d) / "masks.safetensors"  # noqa: E704
def weights_file(d: Path) -> Path: return Path(d) / "weights.safetensors"  # noqa: E704
def optim_file(d: Path) -> Path: return Path(d) / "optim.safetensors"  # noqa: E704
def optim_meta_file(d: Path) -> Path: return Path(d) / "optim.json"  # noqa: E704
def state_file(d: Path) -> Path: return Path(d) / "state.json"  # noqa: E704
def checkpoint_dir(d: Path) -> Path: return Path(d) / "checkpoint"  # noqa: E704


# ---- identities and names ---------------------------------------------------------------------
def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def dir_identity(path: str | os.PathLike, patterns: tuple[str, ...] = ("*",)) -> str:
    """sha256 over the names and contents of the files in ``path`` matching ``patterns``."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    h = hashlib.sha256()
    files = sorted({f for pat in patterns for f in p.glob(pat) if f.is_file()})
    for f in files:
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def model_identity(path: str | os.PathLike) -> str:
    """Identity of a checkpoint directory: its config.json and weight files."""
    return dir_identity(path, ("config.json", "*.safetensors", "*.bin"))


def settings_hash(identity: dict) -> str:
    """Stable hash of a JSON-able identity dict (sorted keys)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_name(method: str, identity: dict) -> str:
    """``<method>-<first 12 hex digits of the settings hash>``."""
    return f"{method}-{settings_hash(identity)[:12]}"


# ---- atomic writes ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on success rename it to ``final`` (atomically).

    If the block raises (or the process dies) ``final`` does not appear; stale temporaries are
    removed by :func:`clean_temporaries`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        _fsync_dir(tmp)
        if final.exists():  # a concurrent writer finished first: keep its result
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
            _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(d: Path) -> None:
    for f in d.iterdir() if d.is_dir() else ():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_temporaries(root: str | os.PathLike) -> int:
    """Remove leftovers of interrupted atomic writes under ``root``; return how many."""
    n = 0
    for p in Path(root).glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


def to_jsonable(x: Any) -> Any:
    """Dataclasses, NumPy scalars/arrays and Paths to plain JSON types."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


# ---- flat state dicts (optimizer state) --------------------------------------------------------
def flatten_state(d: Any, prefix: str = "") -> tuple[dict[str, np.ndarray], dict]:
    """Split a nested state (dicts/lists of arrays and scalars) into arrays and a JSON skeleton."""
    arrays: dict[str, np.ndarray] = {}

    def rec(x: Any, key: str) -> Any:
        if isinstance(x, np.ndarray):
            arrays[key] = np.ascontiguousarray(x)
            return {"__array__": key}
        if isinstance(x, dict):
            return {"__dict__": {str(k): rec(v, f"{key}/{k}" if key else str(k)) for k, v in x.items()}}
        if isinstance(x, (list, tuple)):
            return {"__list__": [rec(v, f"{key}/{i}" if key else str(i)) for i, v in enumerate(x)]}
        if isinstance(x, np.generic):
            return x.item()
        return x

    return arrays, rec(d, prefix)


def unflatten_state(arrays: dict[str, np.ndarray], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__array__" in skeleton:
            return arrays[skeleton["__array__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(arrays, v) for k, v in skeleton["__dict__"].items()}
        if "__list__" in skeleton:
            return [unflatten_state(arrays, v) for v in skeleton["__list__"]]
    return skeleton


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
              metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


# ---- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(d: Path, model: Any, opt: Any | None, state: dict) -> None:
    """Write model weights, masks, optimizer state and ``state`` (JSON) into folder ``d``."""
    d = Path(d)
    save_arrays(weights_file(d), model.state_dict())
    masks = getattr(model, "masks", None) or {}
    if masks:
        save_arrays(masks_file(d), {k: np.asarray(v, dtype=np.uint8) for k, v in masks.items()})
    if opt is not None:
        arrays, skeleton = flatten_state(opt.state_dict())
        save_arrays(optim_file(d), arrays)
        write_json(optim_meta_file(d), skeleton)
    write_json(state_file(d), state)


def load_checkpoint(d: Path, model: Any, opt: Any | None) -> dict:
    """Restore a folder written by :func:`save_checkpoint` into ``model``/``opt``; return its state."""
    d = Path(d)
    weights = load_arrays(weights_file(d))
    if masks_file(d).exists():
        model.set_masks(load_arrays(masks_file(d)))
    model.load_state_dict(weights)
    if opt is not None and optim_file(d).exists():
        opt.load_state_dict(unflatten_state(load_arrays(optim_file(d)), read_json(optim_meta_file(d))))
    return read_json(state_file(d))


class RunDir:
    """One run's folder; ``None``-safe wrapper so methods also run without persistence.

    ``RunDir(None)`` stores nothing: ``done()`` is always False and ``save`` is a no-op.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            clean_temporaries(self.root)

    def __bool__(self) -> bool:
        return self.root is not None

    def path(self, name: str) -> Path:
        assert self.root is not None
        return stage_path(self.root, name)

    def done(self, name: str) -> bool:
        return self.root is not None and stage_path(self.root, name).is_dir()

    def finished(self) -> bool:
        """True when the run's ticket exists."""
        return self.root is not None and (ticket_path(self.root) / "ticket.json").exists()

    def save(self, name: str, model: Any, opt: Any | None, state: dict,
             extra: dict[str, Any] | None = None) -> None:
        """Write stage ``name`` atomically; ``extra`` maps file names to MaskSets/array dicts/JSON."""
        if self.root is None or self.done(name):
            return
        with atomic_dir(stage_path(self.root, name)) as tmp:
            save_checkpoint(tmp, model, opt, state)
            for fname, obj in (extra or {}).items():
                if hasattr(obj, "save") and fname.endswith(".safetensors"):
                    obj.save(tmp / fname)
                elif fname.endswith(".safetensors"):
                    save_arrays(tmp / fname, obj)
                else:
                    write_json(tmp / fname, obj)
        self.write_history(state.get("history", []))
        log.info("saved %s", stage_path(self.root, name))

    def load(self, name: str, model: Any, opt: Any | None) -> dict:
        assert self.root is not None
        log.info("resuming from %s", stage_path(self.root, name))
        return load_checkpoint(stage_path(self.root, name), model, opt)

    def last_done(self, names: list[str]) -> str | None:
        """The last of ``names`` (in order) whose folder exists, or None."""
        last = None
        for n in names:
            if self.done(n):
                last = n
        return last

    def write_history(self, history: list[dict]) -> None:
        if self.root is None:
            return
        atomic_write_text(history_path(self.root),
                          "".join(json.dumps(to_jsonable(h), sort_keys=True) + "\n" for h in history))


def read_history(root: str | os.PathLike) -> list[dict]:
    """Records of a run's history.jsonl."""
    p = history_path(Path(root))
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
