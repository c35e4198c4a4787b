"""Studies: a grid of runs (methods x sparsities x seeds) whose finished cells land in a JSONL file.

A study file (TOML or JSON) names the shared settings, the seeds, the sparsities and the methods::

    name = "default"                      # results/<name>.jsonl unless `results` is given
    seeds = [0, 1, 2]
    sparsities = [0.488, 0.672]
    threads = 2                           # kernels and BLAS (0 = all cores)
    runs = "study-runs/default"           # the cells' run directories (resumable)
    keep_checkpoints = false              # once a cell has its line, delete its run's round checkpoints
                                          # (settings.json, history.jsonl and ticket/ stay)

    [settings]                            # Settings sections shared by every cell
    train = {lr = 5e-5, epochs = 3, batch_size = 32}
    data = {task = "default", max_train_examples = 2400}

    [[methods]]
    label = "dense"                       # the name in tables (unique)
    method = "dense"
    sparsities = [0.0]                    # replaces the study's sparsities for this method

    [[methods]]
    label = "gmp"
    method = "gmp"
    prune = {step = 0.2}                  # overrides of the shared settings for this method
    match_steps = {"0.488" = 312, "0.672" = 392}  # per sparsity: train.match_steps (or max_steps)

One cell is (label, sparsity, seed). Each finished cell appends one JSON line to the results file
(:func:`append_record`: one write of the whole line, then fsync). A cell whose line is already there
is skipped, so a study resumes across processes and machines; a cell killed midway has no line and
is redone (its run directory resumes from its last finished round). A trailing partial line (a write
cut short) is ignored.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from instantsoup.config import METHODS, Settings, SettingsError, prune_fields, settings_from_dict
from instantsoup.methods.common import sparsity_levels
from instantsoup.stats import pack_bits, unpack_bits  # noqa: F401 - part of this module's API

log = logging.getLogger(__name__)

_STUDY_KEYS = {"name", "results", "runs", "seeds", "sparsities", "threads", "settings", "methods", "description",
               "keep_checkpoints"}
_METHOD_KEYS = {"label", "method", "sparsities", "seeds", "train", "prune", "data", "max_steps", "match_steps",
                "description"}
_LEVEL_TOL = 5e-4  # an IMP level matches a cell's target sparsity within this
_BUDGET_KEYS = ("max_steps", "match_steps")  # per-sparsity values of the TrainSettings field of that name


@dataclass
class MethodSpec:
    """One method entry of a study: a label, a method, its setting overrides, its sparsities."""

    label: str
    method: str
    sparsities: list[float]
    seeds: list[int]
    overrides: dict = field(default_factory=dict)       # {"train": {...}, "prune": {...}, "data": {...}}
    budgets: dict[str, dict[float, int]] = field(default_factory=dict)  # max_steps/match_steps per sparsity


@dataclass
class Cell:
    """One (label, sparsity, seed) of the grid and the settings it runs with."""

    spec: MethodSpec
    sparsity: float
    seed: int
    settings: Settings

    @property
    def key(self) -> str:
        return cell_key(self.spec.label, self.sparsity, self.seed)


def cell_key(label: str, sparsity: float, seed: int) -> str:
    """The identity of a cell in the results file: ``label/sparsity/seed``."""
    return f"{label}/{float(sparsity):.6g}/{int(seed)}"


@dataclass
class Study:
    name: str
    results: Path
    runs: Path
    threads: int
    seeds: list[int]
    base: dict
    methods: list[MethodSpec]
    source: str = ""
    keep_checkpoints: bool = False

    def cells(self) -> list[Cell]:
        """The grid, seed-major (every method of seed 0 first, then seed 1, ...), in file order."""
        out = []
        for seed in sorted({s for m in self.methods for s in m.seeds}):
            for m in self.methods:
                if seed not in m.seeds:
                    continue
                for sp in m.sparsities:
                    out.append(Cell(m, sp, seed, cell_settings(self, m, sp, seed)))
        return out


def _read_file(path: Path) -> dict:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SettingsError(f"{path}: not valid JSON: {e}") from None
    if path.suffix.lower() != ".toml":
        raise SettingsError(f"{path}: a study file is .toml or .json")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise SettingsError(f"{path}: reading TOML needs Python >= 3.11 or the 'tomli' package; "
                                "or write the study as JSON") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: not valid TOML: {e}") from None


def load_study(path: str | os.PathLike) -> Study:
    """Read and check a study file (every cell's settings are validated before anything runs)."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"study file {str(path)!r} does not exist")
    d = _read_file(path)
    unknown = set(d) - _STUDY_KEYS
    if unknown:
        raise SettingsError(f"{path}: unknown study keys: {', '.join(sorted(unknown))}")
    name = str(d.get("name") or path.stem)
    seeds = _int_list(d.get("seeds", [0]), f"{path}: seeds")
    sparsities = _float_list(d.get("sparsities", []), f"{path}: sparsities")
    base = d.get("settings", {})
    if not isinstance(base, dict) or set(base) - {"train", "prune", "data", "run"}:
        raise SettingsError(f"{path}: [settings] holds the sections train, prune, data, run")
    specs, labels = [], set()
    for i, m in enumerate(d.get("methods", [])):
        where = f"{path}: methods[{i}]"
        if not isinstance(m, dict):
            raise SettingsError(f"{where}: expected a table")
        unknown = set(m) - _METHOD_KEYS
        if unknown:
            raise SettingsError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
        method = m.get("method")
        if method not in METHODS:
            raise SettingsError(f"{where}: method must be one of {', '.join(METHODS)}, got {method!r}")
        label = str(m.get("label") or method)
        if label in labels or "/" in label:
            raise SettingsError(f"{where}: label {label!r} is used twice or contains '/'")
        labels.add(label)
        sps = _float_list(m["sparsities"], f"{where}: sparsities") if "sparsities" in m else \
            ([0.0] if "sparsity" not in prune_fields(method) else sparsities)  # dense: no target
        if not sps:
            raise SettingsError(f"{where}: no sparsities (give the study's or the method's)")
        budgets = {}
        for key in _BUDGET_KEYS:
            ms = m.get(key, {})
            if not isinstance(ms, dict):
                raise SettingsError(f"{where}: {key} maps a sparsity (a string key) to a step count")
            try:
                budgets[key] = {float(k): int(v) for k, v in ms.items()}
            except (TypeError, ValueError):
                raise SettingsError(f"{where}: {key} maps a sparsity to an integer step count") from None
            missing = [s for s in sps if ms and not any(abs(s - k) < 1e-9 for k in budgets[key])]
            if missing:
                raise SettingsError(f"{where}: {key} has no entry for sparsities {missing}")
        overrides = {k: m[k] for k in ("train", "prune", "data") if k in m}
        specs.append(MethodSpec(label, method, sps, _int_list(m.get("seeds", seeds), f"{where}: seeds"),
                                overrides, budgets))
    if not specs:
        raise SettingsError(f"{path}: the study lists no methods")
    results = Path(d.get("results") or Path("results") / f"{name}.jsonl")
    runs_dir = Path(d.get("runs") or Path("study-runs") / name)
    threads = d.get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise SettingsError(f"{path}: threads must be an integer >= 0, got {threads!r}")
    keep = d.get("keep_checkpoints", False)
    if not isinstance(keep, bool):
        raise SettingsError(f"{path}: keep_checkpoints must be true or false, got {keep!r}")
    study = Study(name, results, runs_dir, threads, seeds, base, specs, str(path), keep)
    cells = study.cells()  # builds and validates every cell's settings
    keys = [c.key for c in cells]
    for c in cells:
        if c.spec.method == "imp" and c.sparsity != imp_run_target(c.spec):
            pr = c.settings.prune
            levels = sparsity_levels(imp_run_target(c.spec), pr.step)
            if not any(abs(lv - c.sparsity) < _LEVEL_TOL for lv in levels):
                raise SettingsError(f"{path}: {c.key}: {c.sparsity} is not one of IMP's natural levels with step "
                                    f"{pr.step} ({', '.join(f'{lv:.4f}' for lv in levels)}); one IMP run at the "
                                    "highest sparsity gives the cells of the others")
    if len(set(keys)) != len(keys):
        raise SettingsError(f"{path}: a (label, sparsity, seed) appears twice")
    return study


def _int_list(v: Any, what: str) -> list[int]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise SettingsError(f"{what}: expected a list of integers >= 0, got {v!r}")
    return list(v)


def _float_list(v: Any, what: str) -> list[float]:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise SettingsError(f"{what}: expected a list of numbers, got {v!r}")
    return [float(x) for x in v]


def imp_run_target(spec: MethodSpec) -> float:
    """IMP: the one run per seed goes to the highest sparsity; its rounds' tickets give the others."""
    return max(spec.sparsities)


def cell_settings(study: Study, spec: MethodSpec, sparsity: float, seed: int) -> Settings:
    """The shared settings, the method's overrides, then the cell's method, sparsity, seed, budget."""
    d = {k: dict(v) for k, v in study.base.items()}
    for part, over in spec.overrides.items():
        d.setdefault(part, {}).update(over)
    d.setdefault("prune", {}).update(method=spec.method, sparsity=float(sparsity))
    d.setdefault("train", {})["seed"] = int(seed)
    for key, per_sparsity in spec.budgets.items():
        for k, v in per_sparsity.items():
            if abs(k - sparsity) < 1e-9:
                d["train"][key] = v
    run = d.setdefault("run", {})
    run.update(out=str(study.runs), threads=study.threads, progress=False, resume=True)
    try:
        s = settings_from_dict(d)
    except TypeError as e:
        raise SettingsError(f"{study.source}: {spec.label}: {e}") from None
    try:
        s.validate()
    except SettingsError as e:
        raise SettingsError(f"{study.source}: {cell_key(spec.label, sparsity, seed)}: {e}") from None
    return s


# ---- the results file -------------------------------------------------------------------------
def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a results file, first line per cell; partial or foreign lines are skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out, seen, bad = [], set(), 0
    with open(p, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad += 1
                continue
            if not isinstance(rec, dict) or "cell" not in rec or rec["cell"] in seen:
                continue
            seen.add(rec["cell"])
            out.append(rec)
    if bad:
        log.warning("%s: skipped %d unreadable line(s) (a write cut short?)", p, bad)
    return out


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one JSON line: a single write of the whole line, then fsync.

    If the file ends in a partial line (a write cut short), the new line starts on a line of its own.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(p, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def code_version() -> dict:
    """instantsoup's version and, in a git checkout, the commit and whether the tree is dirty."""
    import instantsoup

    root = Path(instantsoup.__file__).resolve().parent.parent
    out: dict[str, Any] = {"instantsoup_version": instantsoup.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                 "--", "instantsoup", "csrc", "setup.py"], capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


# ---- running ----------------------------------------------------------------------------------
def select_cells(study: Study, labels: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[Cell]:
    """The study's cells, restricted to ``labels`` / ``seeds`` when given (unknown labels are an error)."""
    cells = study.cells()
    if labels:
        known = {m.label for m in study.methods}
        bad = sorted(set(labels) - known)
        if bad:
            raise SettingsError(f"unknown label(s) {', '.join(bad)}; the study has {', '.join(sorted(known))}")
        cells = [c for c in cells if c.spec.label in set(labels)]
    if seeds is not None:
        cells = [c for c in cells if c.seed in set(seeds)]
    return cells


def run_study(study: Study, cells: list[Cell] | None = None, *, say: Any = print, jobs: int = 1,
              ray: bool = False, address: str | None = None) -> dict:
    """Run the cells without a line in the results file, appending one line each; return counts.

    A cell that fails is reported (with its traceback in the log) and the next one runs; the failure
    leaves no line, so the next invocation tries it again. ``jobs > 1`` runs cells in that many local
    processes, ``ray`` as Ray tasks on the cluster at ``address`` (see instantsoup.parallel and
    docs/SCALE.md); either way every finished cell's line is appended here, on the driver, as it
    arrives. Workers run in this directory (Ray: the same path must exist on every node, e.g.
    shared storage), so relative paths in the study mean the same everywhere.
    """
    from instantsoup import parallel

    cells = study.cells() if cells is None else cells
    version = code_version()
    counts = {"done_before": 0, "ran": 0, "failed": 0}
    before = {r["cell"] for r in read_records(study.results)}
    cwd = os.getcwd()

    def run_of(cell: Cell) -> Cell:  # IMP: the run at the label's highest sparsity gives every level
        if cell.spec.method == "imp" and cell.sparsity != imp_run_target(cell.spec):
            return next(c for c in study.cells() if c.spec is cell.spec and c.seed == cell.seed
                        and c.sparsity == imp_run_target(cell.spec))
        return cell

    def on_done(key: str, recs: list[dict]) -> None:
        done = {r["cell"] for r in read_records(study.results)}
        for r in recs:
            if r["cell"] in done:
                continue
            append_record(study.results, r)
            counts["ran"] += 1
            say(f"[study {study.name}] {r['cell']}: test {r['test_accuracy']:.4f} val {r['val_accuracy']:.4f} "
                f"sparsity {r['sparsity']:.4f} steps {r['steps']} ({recs[0]['cell_seconds']:.0f} s)")

    def on_error(key: str, e: BaseException) -> None:
        counts["failed"] += 1
        log.error("cell %s failed:\n%s", key, "".join(traceback.format_exception(e)))
        say(f"[study {study.name}] {key}: FAILED ({type(e).__name__}: {e})")

    if jobs == 1 and not ray:
        for cell in cells:
            done = {r["cell"] for r in read_records(study.results)}  # re-read: other processes append too
            if cell.key in done:
                counts["done_before"] += cell.key in before
                continue
            run = run_of(cell)
            say(f"[study {study.name}] {run.key}: running")
            try:
                recs = run_cell_task((study, run, version, cwd))
            except Exception as e:  # noqa: BLE001 - one bad cell must not stop the grid
                on_error(run.key, e)
            else:
                on_done(run.key, recs)
        return counts
    counts["done_before"] = sum(c.key in before for c in cells)
    todo = {}
    for cell in cells:
        if cell.key not in before:
            run = run_of(cell)
            todo.setdefault(run.key, run)
    threads = (study.threads or 1) if ray else parallel.threads_per_cell(study.threads, jobs)
    where = f"Ray tasks ({address or 'default cluster'})" if ray else f"{jobs} local processes"
    say(f"[study {study.name}] {len(todo)} cells to run as {where}, {threads} thread(s) each")
    tasks = [(run.key, (study, run, version, cwd)) for run in longest_first(list(todo.values()))]
    parallel.run_cells(tasks, run_cell_task, threads=threads, jobs=jobs, ray=ray, address=address,
                       on_done=on_done, on_error=on_error)
    return counts


def longest_first(runs: list[Cell]) -> list[Cell]:
    """The order in which parallel workers take the runs: IMP runs first, the highest level first
    (an IMP run trains one budget per round, several times a one-pass cell), then the others in
    grid order. Workers take the next run when they finish one, so a long run started last would
    leave the other workers idle while it alone finishes."""
    return sorted(runs, key=lambda c: (0, -c.sparsity) if c.spec.method == "imp" else (1, 0.0))


def run_cell_task(task: tuple) -> list[dict]:
    """One run, in whichever process runs it: ``(study, cell, version, cwd) -> records`` (the cell's,
    with ``cell_seconds``; an IMP run adds the cells of its lower levels). Runs in ``cwd`` (the
    driver's directory) when this machine has it; drops the run's round checkpoints unless the study
    keeps them (the ticket stays, so a rerun does not redo the run)."""
    study, cell, version, cwd = task
    if os.path.isdir(cwd):
        os.chdir(cwd)
    t0 = time.perf_counter()
    rec = run_cell(study, cell, version)
    recs = [rec] + (imp_level_cells(study, cell, rec) if cell.spec.method == "imp" else [])
    rec["cell_seconds"] = time.perf_counter() - t0
    if not study.keep_checkpoints:
        drop_checkpoints(Path(rec["run_dir"]))
    return recs


def drop_checkpoints(root: Path) -> None:
    """Delete the round/stage checkpoints of a finished run directory; keep settings, history, ticket."""
    import shutil

    from instantsoup import runs

    if not runs.ticket_path(root).is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and p.name != runs.ticket_path(root).name:
            shutil.rmtree(p, ignore_errors=True)


def imp_level_cells(study: Study, run: Cell, rec: dict) -> list[dict]:
    """Records of the IMP cells of ``run``'s label and seed below its target, from the tickets of the
    run's rounds (``{"event": "level"}`` history records with per-example correctness)."""
    out = []
    levels = rec.get("imp_levels_full", [])
    for sp in run.spec.sparsities:
        if sp == run.sparsity:
            continue
        match = [lv for lv in levels if abs(lv["sparsity"] - sp) < _LEVEL_TOL]
        if not match or "test_correct" not in match[0]:
            raise RuntimeError(f"{cell_key(run.spec.label, sp, run.seed)}: the IMP run {rec['run_dir']} has no "
                               "round ticket with per-example correctness at this sparsity")
        lv = match[0]
        r = {k: v for k, v in rec.items() if k not in ("imp_levels",)}
        cost = lv.get("cost", {})
        r.update({k: v for k, v in lv.items() if k.startswith(("val_", "test_"))})
        for pre in ("val", "test"):
            r[f"{pre}_accuracy"] = float(unpack_bits(lv[f"{pre}_correct"], rec[f"{pre}_n"]).mean())
        r.update(cell=cell_key(run.spec.label, sp, run.seed), target_sparsity=sp, sparsity=float(lv["sparsity"]),
                 best_step=lv.get("best_step"), steps=int(cost.get("steps", 0)),
                 examples=int(cost.get("examples", 0)), flops=float(cost.get("flops", 0.0)),
                 train_seconds=float(cost.get("seconds", 0.0)), run_wall_seconds=float(cost.get("seconds", 0.0)),
                 derived_from=rec["cell"], imp_round=lv.get("round"))
        for k in ("sparse_flops", "stage_steps", "wall_seconds"):
            r.pop(k, None)
        out.append(r)
    rec.pop("imp_levels_full", None)
    return out


def run_cell(study: Study, cell: Cell, version: dict | None = None) -> dict:
    """Run (or resume) one cell's run directory and build its results record."""
    import instantsoup
    from instantsoup import runner
    from instantsoup.task import load_task
    from instantsoup.train import predict

    ticket, root = runner.run_settings(cell.settings, quiet=True)
    t0 = time.perf_counter()
    s = cell.settings
    model_dir = s.run.model or runner.default_model()
    task = load_task(s.data, model_dir, runner.fit_max_length(model_dir, s.train.max_length), s.train.seed)
    model = runner.load_for_task(model_dir, task, s.train.seed)
    model.set_masks(ticket.masks)
    model.load_state_dict(ticket.weights)
    rec: dict[str, Any] = {
        "study": study.name, "cell": cell.key, "label": cell.spec.label, "method": s.prune.method,
        "variant": s.prune.variant if s.prune.method == "isp" else None, "target_sparsity": cell.sparsity, "seed": cell.seed,
        "sparsity": float(ticket.sparsity), "run_dir": str(root),
    }
    rec.update({k: v for k, v in ticket.metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)})
    for split in ("validation", "test"):
        data = getattr(task, split)
        preds = predict(model, data, 64, task.pad_id, task.is_regression)
        correct = preds == np.asarray(data.labels)
        pre = "val" if split == "validation" else "test"
        ticket_acc = ticket.metrics.get(f"{pre}_accuracy")
        acc = float(np.mean(correct))
        if ticket_acc is not None and abs(ticket_acc - acc) > 1e-9:  # kept, and flagged in the record
            log.warning("%s: re-scored %s accuracy %s differs from the run's %s", cell.key, split, acc, ticket_acc)
            rec[f"{pre}_accuracy_run"] = ticket_acc
        rec[f"{pre}_accuracy"] = acc
        rec[f"{pre}_n"] = int(len(correct))
        rec[f"{pre}_correct"] = pack_bits(correct)
        rec[f"{pre}_majority"] = float(np.bincount(np.asarray(data.labels)).max() / len(correct))
    if s.prune.method == "imp":  # every round's ticket (metrics only; the cell's own level has the full record)
        from instantsoup.methods.imp import level_records

        full = level_records(ticket.history)
        rec["imp_levels"] = [{k: v for k, v in h.items() if k != "cost" and not k.endswith("_correct")}
                             | {"steps": h.get("cost", {}).get("steps")} for h in full]
        rec["imp_levels_full"] = full  # for imp_level_cells; not written
    tot = ticket.cost.total()
    rec.update(steps=int(tot.steps), examples=int(tot.examples), flops=float(tot.flops),
               sparse_flops=float(tot.sparse_flops), train_seconds=float(tot.seconds),
               stage_steps={k: int(v.steps) for k, v in ticket.cost.stages.items() if v.steps},
               run_wall_seconds=float(ticket.metrics.get("wall_seconds", 0.0)),
               score_seconds=time.perf_counter() - t0)
    rec.update(version or code_version())
    rec.update(threads=instantsoup.get_num_threads(), precision="float32",
               machine=f"{platform.machine()} {platform.processor() or ''}".strip(), host=platform.node(),
               finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               settings=dataclasses.asdict(s))
    return rec


def status(study: Study, cells: list[Cell] | None = None) -> Iterator[tuple[Cell, bool]]:
    """(cell, has a line) for every cell of the study."""
    done = {r["cell"] for r in read_records(study.results)}
    for c in study.cells() if cells is None else cells:
        yield c, c.key in done
