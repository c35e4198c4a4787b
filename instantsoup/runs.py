"""Run directories: named from a hash of the settings, written atomically, resumable.

Layout of one run::

    <out>/<method>-<hash12>/
        settings.json          the settings + model and data identity (the hash input)
        history.jsonl          one JSON record per event (evaluations, rounds, stages)
        round_000/ ...         one folder per finished round/stage, each written atomically:
            state.json         global step, round, RNG seeds, data position, history, cost
            masks_packed.safetensors  the masks in force, bit-packed (PackedMaskSet layout)
            weights.safetensors  model.state_dict()       } the resumable state: only the latest
            optim.safetensors  opt.state_dict() arrays    } stage of a chain keeps it (earlier
            optim.json         the optimizer's scalars    } rounds keep masks, state and metrics)
            sha256.json        sha256 of every file above (verified on resume)
        ticket/                the result (masks.safetensors, metrics.json, ticket.json, checkpoint/)
    <out>/.<method>-<hash12>.lock   the run's advisory lock (fcntl.flock; held while a process works)

A stage whose folder exists is finished and is never recomputed; ``resume`` restarts after the last
finished folder whose checksums verify. All randomness is re-derived from (seed, round, step) at the
start of every stage, so a resumed run repeats exactly what an uninterrupted run would have done.
The guarantees (what survives a kill, what the lock protects) are listed in docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from instantsoup.settings_base import SettingsError
from instantsoup.data.sources import is_table_source
from instantsoup.digests import data_identity, model_identity, sha256_file
from instantsoup.fileio import atomic_write_text, follow_umask, load_arrays, save_arrays
from instantsoup.masks import MaskSet, PackedMaskSet

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
def packed_masks_file(d: Path) -> Path: return Path(d) / "masks_packed.safetensors"  # noqa: E704
def manifest_file(d: Path) -> Path: return Path(d) / "sha256.json"  # noqa: E704
def lock_path(root: Path) -> Path: return Path(root).parent / f".{Path(root).name}.lock"  # noqa: E704

EXPORT_MARKER = ".instantsoup-export"  # in every folder Ticket.export writes; only such folders are replaced
KILL_ENV = "INSTANTSOUP_KILL_AT"  # tests: SIGKILL this process at the named kill_point


class RunDirError(SettingsError):
    """A run directory or export folder that cannot be used as asked (locked, foreign, damaged)."""


def kill_point(name: str) -> None:
    """Test hook: die by SIGKILL here when the environment names this point (reliability tests)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ---- identities and names ---------------------------------------------------------------------
def run_identity(settings: Any, model_dir: str | os.PathLike | None = None) -> dict:
    """The identity of a run, from contents only: the settings that change results, the digest of
    the model's weights/config/tokenizer files and of the data files' bytes; never a path spelling
    (``./toy.csv`` and ``toy.csv`` are the same run; a changed vocab.txt is another)."""
    ident = settings.identity()
    data = dict(ident["data"])
    data.pop("data_dir", None)
    for key in ("task", "train_file", "validation_file", "test_file"):
        path = data.get(key)
        if path and is_table_source(path):  # a table file or dataset folder: its format and bytes, not its name
            ext = os.path.splitext(path)[1]
            data[key] = "table" + ext.lower() if ext else "folder"
    data["identity"] = data_identity(settings.data).removeprefix(f"{settings.data.task}:")
    ident["data"] = data
    model_dir = model_dir or settings.run.model
    ident["model"] = model_identity(model_dir) if model_dir else ""
    return ident


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
    follow_umask(tmp, directory=True)
    try:
        yield tmp
        _fsync_dir(tmp)
        if final.exists():  # a concurrent writer finished first: keep its result
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
            _fsync_folder(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(final: str | os.PathLike) -> None:
    """Refuse to replace ``final`` unless it is absent, an empty folder or an instantsoup export
    (holds the :data:`EXPORT_MARKER` file): a folder instantsoup did not write is never deleted."""
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise RunDirError(f"{final} exists and is not a folder instantsoup wrote; refusing to replace it "
                          "(choose another folder)")
    if any(final.iterdir()) and not (final / EXPORT_MARKER).is_file():
        raise RunDirError(f"{final} is not empty and was not written by instantsoup (no {EXPORT_MARKER} "
                          "file); refusing to replace it (choose another folder, or empty it yourself)")


@contextlib.contextmanager
def replacing_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final`` holding the export marker; on success it
    replaces ``final`` (which :func:`check_replaceable` must accept). A failure leaves the old
    ``final`` untouched; a kill leaves ``.tmp-*``/``.trash-*`` folders next to it, never a
    half-written ``final``."""
    final = Path(final)
    check_replaceable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    follow_umask(tmp, directory=True)
    try:
        (tmp / EXPORT_MARKER).write_text("written by instantsoup: a new export may replace this folder\n")
        yield tmp
        kill_point("export-written")
        _fsync_dir(tmp)
        check_replaceable(final)  # still ours (nothing foreign appeared meanwhile)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".trash-{final.name}-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        _fsync_folder(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_tree(root: str | os.PathLike) -> None:
    """Delete a folder so that no kill can leave it half-deleted in place: rename it aside first
    (atomic), then delete the renamed copy (a leftover ``.trash-*`` is removed by
    :func:`clean_temporaries`)."""
    root = Path(root)
    if not root.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".trash-{root.name}-", dir=root.parent))
    os.replace(root, trash / root.name)
    _fsync_folder(root.parent)
    kill_point("trash-renamed")
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(d: Path) -> None:
    """fsync every file under folder ``d`` and the folders themselves; files and folders written
    through mkstemp-style temporaries (mode 0600) get the mode the umask gives."""
    d = Path(d)
    for sub in [p for p in d.rglob("*") if p.is_dir()] if d.is_dir() else []:
        follow_umask(sub, directory=True)
    for f in d.rglob("*") if d.is_dir() else ():
        if f.is_file() and not f.is_symlink():
            follow_umask(f)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_folder(d)


def _fsync_folder(d: Path) -> None:
    """fsync a folder's entry list (after a rename in it)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_temporaries(root: str | os.PathLike, names: tuple[str, ...] = (".tmp-*", ".trash-*"),
                      nested: bool = True) -> int:
    """Remove leftovers of interrupted atomic writes in ``root`` (and, ``nested``, its subfolders);
    return how many. Call it only while holding the run's lock (:class:`RunLock`)."""
    n = 0
    root = Path(root)
    subs = [c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")] if nested else []
    for d in [root, *subs]:
        for pat in names:
            for p in d.glob(pat):
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


# ---- checkpoints ------------------------------------------------------------------------------
STATE_FILES = ("weights.safetensors", "optim.safetensors", "optim.json")  # the resumable state


def save_checkpoint(d: Path, model: Any, opt: Any | None, state: dict) -> None:
    """Write model weights, bit-packed masks, optimizer state and ``state`` (JSON) into folder ``d``."""
    d = Path(d)
    save_arrays(weights_file(d), model.state_dict())
    masks = getattr(model, "masks", None) or {}
    if masks:
        packed = MaskSet({k: np.asarray(v, dtype=np.uint8) for k, v in masks.items()}).pack()
        save_arrays(packed_masks_file(d), {"bits": packed.bits},
                    {"names": json.dumps(packed.names), "shapes": json.dumps([list(s) for s in packed.shapes.values()])})
    if opt is not None:
        arrays, skeleton = flatten_state(opt.state_dict())
        save_arrays(optim_file(d), arrays)
        write_json(optim_meta_file(d), skeleton)
    write_json(state_file(d), state)


def load_packed_masks(path: str | os.PathLike) -> Any:
    """The MaskSet stored by :func:`save_checkpoint` (bit-packed)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        bits = f.get_tensor("bits")
    return PackedMaskSet(json.loads(meta["names"]), [tuple(s) for s in json.loads(meta["shapes"])], bits).unpack()


def load_checkpoint(d: Path, model: Any, opt: Any | None) -> dict:
    """Restore a folder written by :func:`save_checkpoint` into ``model``/``opt``; return its state."""
    d = Path(d)
    weights = load_arrays(weights_file(d))
    if packed_masks_file(d).exists():
        model.set_masks(load_packed_masks(packed_masks_file(d)))
    elif masks_file(d).exists():  # run directories of instantsoup 0.1
        model.set_masks(load_arrays(masks_file(d)))
    model.load_state_dict(weights)
    if opt is not None and optim_file(d).exists():
        opt.load_state_dict(unflatten_state(load_arrays(optim_file(d)), read_json(optim_meta_file(d))))
    return read_json(state_file(d))


def write_manifest(d: Path) -> None:
    """Record the sha256 of every file in folder ``d`` (``sha256.json``)."""
    d = Path(d)
    files = sorted(f.name for f in d.iterdir() if f.is_file() and f.name != manifest_file(d).name
                   and not f.name.startswith("."))
    write_json(manifest_file(d), {"sha256": {n: sha256_file(d / n) for n in files}})


def verify(d: Path) -> str | None:
    """None when every file listed in ``d``'s manifest has its recorded sha256, else what is wrong.
    A folder without a manifest (instantsoup 0.1) is accepted as is."""
    d = Path(d)
    if not manifest_file(d).exists():
        return None
    try:
        listed = read_json(manifest_file(d))["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{manifest_file(d).name} is unreadable ({e})"
    for name, digest in sorted(listed.items()):
        if not (d / name).is_file():
            return f"{name} is missing"
        if sha256_file(d / name) != digest:
            return f"{name} does not match its recorded sha256 (truncated or altered)"
    return None


def has_state(d: Path) -> bool:
    """Whether stage folder ``d`` still holds a resumable state (weights + optimizer)."""
    d = Path(d)
    if manifest_file(d).exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return weights_file(d).name in read_json(manifest_file(d))["sha256"]
        return False
    return weights_file(d).exists()


def strip_state(d: Path) -> None:
    """Drop the resumable state of an older stage (its masks, state.json and metrics stay): the
    manifest is rewritten first, so a kill in between leaves only unlisted files."""
    d = Path(d)
    listed = read_json(manifest_file(d))["sha256"] if manifest_file(d).exists() else {}
    write_json(manifest_file(d), {"sha256": {k: v for k, v in listed.items() if k not in STATE_FILES}})
    for name in STATE_FILES:
        (d / name).unlink(missing_ok=True)


# ---- the lock ---------------------------------------------------------------------------------
_HELD: dict[str, list] = {}  # lock path -> [fd, count]: one process re-enters its own lock


class RunLock:
    """An advisory lock (``fcntl.flock``) on ``<out>/.<run name>.lock``, next to the run directory
    so that it survives the directory being renamed aside. A second process waits for it (saying
    so) or, with ``wait=False``, refuses. Released by :meth:`release` or when the process ends."""

    def __init__(self, root: str | os.PathLike, wait: bool = True):
        self.path = os.path.realpath(lock_path(Path(root)))
        self.released = False
        if self.path in _HELD:
            _HELD[self.path][1] += 1
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                if not wait:
                    raise RunDirError(f"run directory {root} is in use by another instantsoup process "
                                      f"(pid {holder}); wait for it, or rerun without --no-wait to queue "
                                      "behind it") from None
                log.warning("run directory %s is in use by another instantsoup process (pid %s); "
                            "waiting for it to finish", root, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        _HELD[self.path] = [fd, 1]

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        held = _HELD.get(self.path)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self.path]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


class RunDir:
    """One run's folder; ``None``-safe wrapper so methods also run without persistence.

    ``RunDir(None)`` stores nothing: ``done()`` is always False and ``save`` is a no-op. Otherwise
    the run's lock is taken first (``wait=False``: refuse when another process holds it); then,
    with ``fresh=True``, an existing run directory is renamed aside and deleted (a folder that is
    not a run directory is refused); then leftovers of interrupted writes are removed.
    """

    def __init__(self, root: str | os.PathLike | None, *, wait: bool = True, fresh: bool = False):
        self.root = Path(root) if root is not None else None
        self.lock: RunLock | None = None
        self.chain: list[str] = []
        if self.root is None:
            return
        self.lock = RunLock(self.root, wait=wait)
        clean_temporaries(self.root.parent, (f".trash-{self.root.name}-*",), nested=False)
        if fresh and self.root.exists():
            if not self.root.is_dir() or (any(self.root.iterdir()) and not settings_path(self.root).exists()):
                self.close()
                raise RunDirError(f"run_dir {os.fspath(self.root)!r} is not empty and is not a run directory "
                                  "(no settings.json); refusing to delete it to start over")
            remove_tree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        clean_temporaries(self.root)
        tk = ticket_path(self.root)
        if tk.is_dir() and not (tk / "ticket.json").exists() and settings_path(self.root).exists():
            remove_tree(tk)  # a half-written export of instantsoup 0.1 (it wrote in place); redone

    def __bool__(self) -> bool:
        return self.root is not None

    def close(self) -> None:
        """Release the run's lock (the folder stays)."""
        if self.lock is not None:
            self.lock.release()

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
        """Write stage ``name`` atomically with its checksums; ``extra`` maps file names to
        MaskSets/array dicts/JSON. The stages of the chain (:meth:`resume_from`) before ``name``
        then drop their resumable state: only the latest keeps weights and optimizer."""
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
            write_manifest(tmp)
        kill_point("stage-saved")
        self.write_history(state.get("history", []))
        if name in self.chain:
            for older in self.chain[:self.chain.index(name)]:
                if self.done(older) and has_state(self.path(older)):
                    strip_state(self.path(older))
        log.info("saved %s", stage_path(self.root, name))

    def load(self, name: str, model: Any, opt: Any | None) -> dict:
        assert self.root is not None
        log.info("resuming from %s", stage_path(self.root, name))
        try:
            return load_checkpoint(stage_path(self.root, name), model, opt)
        except (ValueError, KeyError, OSError) as e:
            raise RunDirError(f"cannot resume from {stage_path(self.root, name)} ({e}); move that folder "
                              "away to resume from the one before it") from e

    def last_done(self, names: list[str]) -> str | None:
        """The last of ``names`` (in order) whose folder exists, or None."""
        last = None
        for n in names:
            if self.done(n):
                last = n
        return last

    def resume_from(self, names: list[str]) -> str | None:
        """The stage of the chain ``names`` to resume from: the last one that still holds a resumable
        state and whose checksums verify, or None (start the chain over). Stages after it (damaged,
        or without a state to resume from) are discarded, saying so, and recomputed."""
        self.chain = list(names)
        if self.root is None:
            return None
        done = [n for n in names if self.done(n)]
        discard: list[str] = []
        for n in reversed(done):
            problem = verify(self.path(n))
            if problem is None and has_state(self.path(n)):
                break
            if problem is not None:
                log.warning("%s is damaged: %s; it is discarded and recomputed", self.path(n), problem)
            discard.append(n)
        else:
            n = None
        if discard:
            log.warning("resuming %s from %s (discarding %s)", self.root,
                        n or "the beginning", ", ".join(sorted(discard)))
            for d in discard:
                remove_tree(self.path(d))
        return n
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
