"""The ``instantsoup`` command: demo, prune, eval, report, info."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import errno
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from instantsoup.config import (PRECISIONS, DataSettings, PruneSettings, RunSettings, Settings, SettingsError,
                                TrainSettings, add_arguments, check_model_dir, explicit_options, from_namespace,
                                read_config_file, settings_dict, with_family_defaults, with_preset)
from instantsoup.methods.registry import REGISTRY
from instantsoup.runner import fit_max_length, load_for_task, run_settings, set_threads as _set_threads

log = logging.getLogger("instantsoup")


def _cmd_info(args: argparse.Namespace) -> int:
    import instantsoup

    info = instantsoup.build_info()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in info)
        for k in sorted(info):
            print(f"{k:<{width}}  {info[k]}")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the options; a ``--preset`` (or, for a CLIP model, CLIP's hyperparameters) fills
    every option not given explicitly."""
    s = Settings(train=from_namespace(TrainSettings, args), prune=from_namespace(PruneSettings, args),
                 data=from_namespace(DataSettings, args), run=from_namespace(RunSettings, args))
    given = explicit_options(args)
    if s.run.preset:
        return with_preset(s, s.run.preset, given)
    from instantsoup.models import read_config

    try:
        model_type = read_config(s.run.model).get("model_type") if s.run.model else None
    except (OSError, ValueError):  # not a checkpoint: validate() says so
        model_type = None
    return with_family_defaults(s, model_type, given)


def _cmd_prune(args: argparse.Namespace) -> int:
    from instantsoup import report
    from instantsoup.runs import to_jsonable

    settings = _settings(args)
    if args.print_config:
        print(json.dumps(to_jsonable(settings_dict(settings)), indent=2, sort_keys=True))
        return 0
    ticket, root = run_settings(settings, fresh=not settings.run.resume, keep_round_masks=args.keep_round_masks)
    rows = report.load_rows([root / "ticket"])
    print(report.format_table(rows))
    print(f"ticket: {root / 'ticket'}  (masks.safetensors, checkpoint/, metrics.json)")
    return 0


def checkpoint_label_names(model_dir: str) -> list[str] | None:
    """The class names of a sequence classifier checkpoint in id order (``id2label``; LABEL_i when its
    config has only ``num_labels``); None for models without a classifier head (CLIP) or regression."""
    from instantsoup.models import read_config

    cfg = read_config(model_dir)
    if cfg.get("model_type") == "clip" or _is_regression(cfg):
        return None
    id2label = cfg.get("id2label")
    n = _head_size(cfg)
    if isinstance(id2label, dict) and len(id2label) == n:
        try:
            return [str(id2label.get(str(i), id2label.get(i))) for i in range(n)]  # type: ignore[call-overload]
        except TypeError:
            pass
    return [f"LABEL_{i}" for i in range(n)]


def _head_size(cfg: dict) -> int:
    """Outputs of a checkpoint's classifier as transformers reads its config (num_labels, else id2label)."""
    id2label = cfg.get("id2label")
    return int(cfg.get("num_labels") or (len(id2label) if isinstance(id2label, dict) and id2label else 2))


def _is_regression(cfg: dict) -> bool:
    return cfg.get("problem_type") == "regression" or _head_size(cfg) == 1


def _score(model, task, split, batch_size: int) -> dict:
    """Metrics of ``model`` on a split, with its size ``n`` and, for named classes, per-label counts and
    accuracy (recall) keyed by the label's name."""
    import numpy as np

    from instantsoup.train import predict

    preds = predict(model, split, batch_size, task.pad_id, task.is_regression)
    out: dict = {k: float(v) for k, v in task.metric(preds, split.labels).items()}
    out["n"] = len(split)
    if task.label_names and not task.is_regression:
        y = np.asarray(split.labels)
        out["per_label"] = {name: {"n": int(np.sum(y == i)),
                                   "accuracy": float(np.mean(preds[y == i] == i)) if np.any(y == i) else None}
                            for i, name in enumerate(task.label_names)}
    return out


def _eval_task(args: argparse.Namespace, data: DataSettings, label_names: list[str] | None):
    """The task ``eval`` scores: ``--file`` whole (as the test split), else the task's splits."""
    from instantsoup import data as D
    from instantsoup.task import encode, load_task, metric_for
    from instantsoup.train import TaskData

    max_length = fit_max_length(args.checkpoint, args.max_length)
    if not args.file:
        return load_task(data, args.checkpoint, max_length, args.seed, label_names=label_names)
    from instantsoup.models import read_config

    regression = _is_regression(read_config(args.checkpoint))
    ds = D.load_table(args.file, data.text_column, data.label_column, data.text_pair_column or None,
                      label_names=None if regression else label_names, regression=regression,
                      num_labels=None if regression else data.num_labels or None)
    if not regression and len(ds.label_names) < 2:
        raise SettingsError(f"{args.file}: {len(ds.label_names)} class(es) {ds.label_names}; scoring it needs the "
                            "checkpoint's labels (its config.json id2label) or --num-labels")
    tok = D.Tokenizer.from_pretrained(args.checkpoint)
    split = encode(tok, ds, max_length)
    pad = getattr(tok, "pad_token_id", None)
    return TaskData(name=ds.task, train=split, validation=None, test=split, metric=metric_for(ds),
                    num_labels=ds.num_labels, main_metric=ds.primary_metric, is_regression=regression,
                    pad_id=0 if pad is None else int(pad),
                    tokenizer_dir=args.checkpoint, label_names=list(ds.label_names))


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    import instantsoup
    from instantsoup import runs

    check_model_dir(args.checkpoint)
    data = from_namespace(DataSettings, args)
    if args.file:
        if not os.path.isfile(args.file):
            raise SettingsError(f"--file {args.file!r} is not a file")
    else:
        data.validate()
    _set_threads(args.threads)
    names = None if args.reinit_head else checkpoint_label_names(args.checkpoint)
    task = _eval_task(args, data, names)
    if names is None or task.info.get("classnames"):
        model = load_for_task(args.checkpoint, task)  # --reinit-head: a head of the task's size
    else:
        model = instantsoup.load_model(args.checkpoint)
        if model.num_labels != task.num_labels:  # the labels were mapped through the checkpoint's names
            raise SettingsError(f"the checkpoint's head has {model.num_labels} outputs but the task has "
                                f"{task.num_labels} labels; --reinit-head evaluates a new random head")
    try:
        model.precision = args.precision
    except ValueError as e:  # INSTANTSOUP_ISA names a path this CPU lacks
        raise SettingsError(str(e)) from None
    if args.mask:
        try:
            model.set_masks(runs.load_arrays(args.mask))
        except (ValueError, TypeError) as e:  # names/shapes of another model, values not 0/1
            raise SettingsError(f"--mask {args.mask}: {e}") from None
    sd = model.state_dict()
    zeros = sum(int(np.count_nonzero(sd[n] == 0)) for n in model.prunable_names)
    out = {"sparsity": zeros / max(1, sum(sd[n].size for n in model.prunable_names))}  # exact zeros
    if args.mask:
        out["mask_sparsity"] = 1.0 - sum(int(np.count_nonzero(m)) for m in model.masks.values()) / max(
            1, sum(m.size for m in model.masks.values()))
    if task.label_names:
        out["label_names"] = list(task.label_names)
    if args.file:
        out.update({"file": args.file, **_score(model, task, task.test, args.batch_size)})
    else:
        for split in (["validation", "test"] if args.split == "both" else [args.split]):
            data_split = getattr(task, split)
            if data_split is not None and len(data_split):
                out.update({f"{split}_{k}": v for k, v in _score(model, task, data_split, args.batch_size).items()})
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from instantsoup import report

    studies = [p for p in args.paths if report.is_results_file(p)]
    if studies:
        return _report_study(args, studies)
    tickets = report.find_tickets(args.paths)
    rows = []
    for t in tickets:  # a damaged run is named and skipped; the others are reported
        try:
            rows += report.load_rows([t])
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"instantsoup report: warning: skipping {t}: {describe(e)}", file=sys.stderr)
    if not rows:
        print(f"instantsoup report: error: no readable finished runs under {', '.join(args.paths)}",
              file=sys.stderr)
        return 2
    if args.group_by == "seed":
        rows = report.group_by_seed(rows)
    print(report.format_table(rows))
    if args.plots:
        for p in report.plot(rows, args.plots):
            print(f"wrote {p}")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r} - {"layer_sparsity"}))
            w.writeheader()
            w.writerows([{k: v for k, v in r.items() if k != "layer_sparsity"} for r in rows])
        print(f"wrote {args.csv}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from instantsoup import study as S

    st = S.load_study(args.study_file)
    labels = [x for x in args.only.split(",") if x] if args.only else None
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x] if args.seeds else None
    except ValueError:
        raise SettingsError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    cells = S.select_cells(st, labels, seeds)
    if args.list:
        for cell, done in S.status(st, cells):
            print(f"{'done' if done else 'todo'}  {cell.key}")
        return 0
    print(f"[study {st.name}] {len(cells)} cells; results in {st.results}; runs in {st.runs}", flush=True)
    if args.jobs < 1:
        raise SettingsError(f"--jobs must be >= 1, got {args.jobs}")
    if args.ray is not None and importlib.util.find_spec("ray") is None:
        raise SettingsError("--ray needs Ray: pip install 'instantsoup[ray]' (on this machine and every node)")
    try:
        counts = S.run_study(st, cells, say=lambda m: print(m, flush=True), jobs=args.jobs,
                             ray=args.ray is not None, address=args.ray or None)
    except ConnectionError as e:  # Ray: no cluster at that address
        raise SettingsError(f"--ray {args.ray}: cannot reach the Ray cluster ({e})") from None
    print(f"[study {st.name}] ran {counts['ran']}, already done {counts['done_before']}, failed {counts['failed']}")
    return 1 if counts["failed"] else 0


def _report_study(args: argparse.Namespace, paths: list[str]) -> int:
    from instantsoup import report
    from instantsoup.study import read_records

    if len(paths) != len(args.paths):
        raise SettingsError("give either results files (*.jsonl) or run directories, not both")
    records = [r for p in paths for r in read_records(p)]
    if not records:
        print(f"instantsoup report: error: no finished cells in {', '.join(paths)}", file=sys.stderr)
        return 2
    if args.margin <= 0 or args.bootstrap < 100 or args.min_seeds < 1:
        raise SettingsError("--margin must be > 0, --bootstrap >= 100 and --min-seeds >= 1")
    text = report.study_markdown(records, args.reference, args.margin, args.bootstrap, args.min_seeds)
    if args.overlaps:
        text += "\n" + report.study_overlaps_markdown(report.study_overlaps(records, args.runs_root))
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
        print(f"wrote {args.markdown}")
    if args.plots:
        for p in report.study_plots(records, args.plots):
            print(f"wrote {p}")
    return 0


# sized for "a few minutes on 2 cores" with the default 6-layer MiniLM (~1-3 s per step of 16): every
# method gets the same total of optimizer steps (ISP's denoiser steps included, --match-steps); lr chosen
# once on the dense model's validation accuracy among 5e-5, 1e-4, 2e-4 at this budget (docs/experiments.md)
DEMO_DEFAULTS = {"sparsity": 0.7, "steps": 90, "lr": 2e-4, "batch_size": 16, "max_length": 48,
                 "denoisers": 2, "lookahead": 4, "step": 0.35, "max_train_examples": 512,
                 "max_eval_examples": 0, "length_buckets": 16}
DEMO_METHODS = ("dense", "omp", "isp")
DEMO_HELP = {"steps": "optimizer steps of every method in total (ISP: main model + denoisers)",
             "max_eval_examples": "validation/test examples at most (0 = all: the 2,065 movie-disjoint test snippets)",
             "length_buckets": "sort windows of this many batches by length before cutting them (0 = plain shuffled "
                               "batches, the order the README's recorded output used)"}


def _demo_caveats(settings: Settings, tickets: list) -> list[str]:
    """Lines that tell a reader how to judge the demo's accuracies."""
    import numpy as np

    from instantsoup import data as D
    from instantsoup.methods.common import overlap
    from instantsoup.task import load_task
    from instantsoup.train import training_cost

    task = load_task(settings.data, str(D.default_model_path()), settings.train.max_length, settings.train.seed)
    labels = np.asarray(task.test.labels)
    majority = float(np.bincount(labels).max() / len(labels))
    se = float(np.sqrt(0.75 * 0.25 / len(labels)))
    steps = {t.method: training_cost(t.cost)["steps"] for t in tickets}
    out = [f"test split: {len(labels)} movie-disjoint snippets; always predicting the majority class scores "
           f"{majority:.4f}; one standard error of an accuracy near 0.75 is {se:.3f}.",
           "budget: every method trained " + ", ".join(f"{m} {n}" for m, n in steps.items()) +
           " optimizer steps in total (ISP: main model + denoiser look-ahead steps); lr "
           f"{settings.train.lr:g}, chosen once on the dense model's validation accuracy.",
           f"caveats: one seed, {len(task.train)} training snippets, a budget far below the paper's; "
           "small gaps are noise. The study (docs/results.md) has seeds, confidence intervals and IMP."]
    pruned = [t for t in tickets if t.method != "dense"]
    if len(pruned) == 2:
        j = overlap(pruned[0].masks, pruned[1].masks)["jaccard"]
        out.append(f"mask overlap: the {pruned[0].method} and {pruned[1].method} masks share {j:.1%} of their "
                   "kept weights (Jaccard); what differs beyond that is the training schedule.")
    return out


def _cmd_demo(args: argparse.Namespace) -> int:
    from instantsoup import report
    from instantsoup.ticket import Ticket

    t0 = time.perf_counter()
    base = Settings(
        train=TrainSettings(batch_size=args.batch_size, lr=args.lr, match_steps=args.steps, seed=args.seed,
                            max_length=args.max_length, warmup_ratio=0.06, precision=args.precision,
                            length_buckets=args.length_buckets),
        prune=PruneSettings(sparsity=args.sparsity, step=args.step, denoisers=args.denoisers,
                            lookahead=args.lookahead),
        data=DataSettings(task="default", max_train_examples=args.max_train_examples,
                          max_eval_examples=args.max_eval_examples),
        run=RunSettings(out=args.out, threads=args.threads, progress=not args.no_progress))
    roots = []
    for method in DEMO_METHODS:
        s = dataclasses.replace(base, prune=dataclasses.replace(
            base.prune, method=method, sparsity=0.0 if method == "dense" else args.sparsity))
        print(f"[demo] {method} ...", file=sys.stderr, flush=True)
        _, root = run_settings(s)
        roots.append(root / "ticket")
    rows = report.load_rows(roots)
    print(report.format_table(rows, ["method", "sparsity", report.main_metric(rows) or "sparsity",
                                     report.main_metric(rows, "val") or "sparsity", "steps", "seconds"]))
    for line in _demo_caveats(base, [Ticket.load(r, with_weights=False) for r in roots]):
        print(line)
    plots = report.plot(rows, Path(args.out) / "plots", overlaps=True)
    print(f"tickets: {', '.join(str(r) for r in roots)}")
    print(f"plots: {', '.join(str(p) for p in plots)}")
    print(f"demo wall time: {time.perf_counter() - t0:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="instantsoup",
        description="Instant Soup Pruning: lottery tickets from pre-trained transformers on a CPU.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="print build information (BLAS, threads, compiler)")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_cmd_info)

    pr = sub.add_parser("prune", help=f"draw a ticket with a method ({', '.join(REGISTRY)})",
                        description="Prune a Hugging Face checkpoint on a task; writes a resumable run "
                        "directory <out>/<method>-<hash>/ with the ticket in ticket/.",
                        epilog="methods: " + "; ".join(f"{m.name}: {m.description}" for m in REGISTRY.values()))
    for cls in (PruneSettings, TrainSettings, DataSettings, RunSettings):
        add_arguments(pr, cls)
    pr.add_argument("--keep-round-masks", action="store_true",
                    help="ISP: also store every round's main/denoiser/merged masks in the run directory "
                    "(not part of the run's hash)")
    pr.add_argument("--config", default="", metavar="FILE",
                    help="read settings from a TOML or JSON file (sections train/prune/data/run, as "
                    "--print-config prints them; a run's settings.json works too); flags given on the command "
                    "line override it")
    pr.add_argument("--print-config", action="store_true",
                    help="print the resolved settings (defaults < --config < flags) as JSON and exit")
    pr.set_defaults(func=_cmd_prune, parser=pr)

    ev = sub.add_parser("eval", help="evaluate a checkpoint (optionally with a mask file) on a task")
    ev.add_argument("checkpoint", help="Hugging Face checkpoint directory")
    ev.add_argument("--mask", default="", help="mask file (safetensors, 1 = kept) to apply first")
    ev.add_argument("--split", default="both", choices=("validation", "test", "both"), help="which split")
    ev.add_argument("--batch-size", type=int, default=64, help="evaluation batch size")
    ev.add_argument("--max-length", type=int, default=128, help="maximum tokens per example")
    ev.add_argument("--seed", type=int, default=0, help="seed of the validation hold-out split")
    ev.add_argument("--threads", type=int, default=0, help="threads (0 = the default: INSTANTSOUP_NUM_THREADS, else OMP_NUM_THREADS, else all cores)")
    ev.add_argument("--file", default="", help="score this whole table file (.csv/.tsv/.jsonl/.parquet); its "
                    "labels are mapped through the checkpoint's label2id (without --file: the task's "
                    "validation/test splits, as prune made them)")
    ev.add_argument("--reinit-head", action="store_true",
                    help="evaluate with a new, randomly initialised classifier head of the task's size instead of "
                    "refusing a head that does not fit the task's labels")
    ev.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="precision of the matrix products (bf16: bf16 operands, fp32 accumulation)")
    add_arguments(ev, DataSettings)
    ev.set_defaults(func=_cmd_eval)

    rp = sub.add_parser("report", help="table and PNG plots from run directories or a study's results file")
    rp.add_argument("paths", nargs="+", help="run directories, ticket directories, folders of runs, or a "
                    "study's results file (results/<study>.jsonl)")
    rp.add_argument("--plots", default="", help="write accuracy/layer-sparsity/overlap/cost PNGs here")
    rp.add_argument("--csv", default="", help="also write the table as CSV")
    rp.add_argument("--group-by", default="", choices=("", "seed"),
                    help="run directories: one row (mean ± 95%% CI) per group of runs that differ only in seed")
    rp.add_argument("--reference", default="imp", help="results file: the method label differences are paired with")
    rp.add_argument("--margin", type=float, default=1.0, help="results file: equivalence margin in accuracy points")
    rp.add_argument("--bootstrap", type=int, default=10_000, help="results file: bootstrap resamples")
    rp.add_argument("--min-seeds", type=int, default=3, help="results file: a verdict on fewer seeds is marked "
                    "provisional (its interval lacks the seed-to-seed noise)")
    rp.add_argument("--markdown", default="", help="results file: also write the Markdown tables to this file")
    rp.add_argument("--overlaps", action="store_true", help="results file: also the Jaccard overlap of the "
                    "methods' masks, read from the cells' run directories")
    rp.add_argument("--runs-root", default=".", help="results file: the folder the study ran in (its run_dir "
                    "paths are relative to it; default: here)")
    rp.set_defaults(func=_cmd_report)

    stp = sub.add_parser("study", help="run a grid of runs (methods x sparsities x seeds) from a study file",
                         description="Run every cell of a study (TOML/JSON) that has no line in its results "
                         "file yet; append one JSON line per finished cell (resumable; see docs/results.md).")
    stp.add_argument("study_file", help="study file (.toml or .json)")
    stp.add_argument("--only", default="", help="comma-separated method labels to run (default: all)")
    stp.add_argument("--seeds", default="", help="comma-separated seeds to run (default: all)")
    stp.add_argument("--list", action="store_true", help="list the cells as done/todo and exit")
    stp.add_argument("--jobs", type=int, default=1, help="run cells in N local processes (threads per cell: the "
                     "study's, else the cores shared out)")
    stp.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run each cell as a Ray task (pip install 'instantsoup[ray]') on the cluster at ADDRESS "
                     "(default: RAY_ADDRESS or the cluster started on this machine); see docs/SCALE.md")
    stp.set_defaults(func=_cmd_study)

    de = sub.add_parser("demo", help="dense vs one-shot vs ISP on the embedded model and dataset, the same "
                        "optimizer-step budget for each (minutes)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    de.add_argument("--out", default="instantsoup-demo", help="output folder (runs, tickets, plots)")
    for k, v in DEMO_DEFAULTS.items():
        de.add_argument("--" + k.replace("_", "-"), type=type(v), default=v, help=DEMO_HELP.get(k, f"demo {k}"))
    de.add_argument("--seed", type=int, default=0, help="seed")
    de.add_argument("--threads", type=int, default=0, help="threads (0 = the default: INSTANTSOUP_NUM_THREADS, else OMP_NUM_THREADS, else all cores)")
    de.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="precision of the matrix products (bf16: bf16 operands, fp32 accumulation)")
    de.add_argument("--no-progress", action="store_true", help="hide progress bars")
    de.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from instantsoup.data.default import MissingDemoPackage
    from instantsoup.data.errors import DataError

    from safetensors import SafetensorError

    expected = (SettingsError, DataError, MissingDemoPackage, ValueError, OSError, SafetensorError,
                FloatingPointError, MemoryError)
    try:
        if getattr(args, "config", ""):  # the file's values become defaults; flags on the line win
            from_file = read_config_file(args.config)
            args.parser.set_defaults(**from_file)
            args = parser.parse_args(argv)
            # a preset / a family's defaults fill only what neither the file nor the line gives
            args.explicit = explicit_options(args) | set(from_file)
        return args.func(args)
    except expected as e:  # one line (the traceback with -v), exit 2
        if args.verbose:
            traceback.print_exc()
        print(f"instantsoup {args.command}: error: {describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"instantsoup {args.command}: interrupted (finished rounds are kept: rerun the same command "
              "to resume)", file=sys.stderr)
        return 130


def describe(e: BaseException) -> str:
    """One line for an expected failure (file names, the disk-full / read-only cases spelled out)."""
    if isinstance(e, OSError) and e.errno is not None:
        where = " ".join(str(f) for f in (e.filename, e.filename2) if f)
        hint = {errno.ENOSPC: " (the disk is full: free space and rerun the command; finished rounds are kept)",
                errno.EROFS: " (choose another --out)",
                errno.EACCES: " (choose another --out, or fix the permissions)"}.get(e.errno, "")
        return f"{where + ': ' if where else ''}{e.strerror or e}{hint}"
    if isinstance(e, MemoryError):
        return f"out of memory{f' ({e})' if str(e) else ''}"
    text = str(e) or type(e).__name__
    return " ".join(text.split()) if "\n" in text and len(text) < 2000 else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
