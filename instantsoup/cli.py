"""The ``instantsoup`` command: demo, prune, eval, report, info."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from instantsoup.config import (PRECISIONS, DataSettings, PruneSettings, RunSettings, Settings, SettingsError,
                                TrainSettings, add_arguments, check_model_dir, from_namespace)

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
    return Settings(train=from_namespace(TrainSettings, args), prune=from_namespace(PruneSettings, args),
                    data=from_namespace(DataSettings, args), run=from_namespace(RunSettings, args))


def _default_model() -> str:
    from instantsoup import data

    return str(data.default_model_path())


def _set_threads(n: int) -> None:
    if n > 0:
        import instantsoup

        instantsoup.set_num_threads(n)


def fit_max_length(model_dir: str, max_length: int) -> int:
    """``max_length`` capped at the model's ``max_position_embeddings`` (longer inputs are truncated
    there rather than refused in the middle of training)."""
    from instantsoup.models import read_config

    limit = read_config(model_dir).get("max_position_embeddings")
    if isinstance(limit, int) and 0 < limit < max_length:
        log.warning("max_length %d exceeds the model's max_position_embeddings %d; truncating at %d",
                    max_length, limit, limit)
        return limit
    return max_length


def load_for_task(model_dir: str, task, seed: int = 0):
    """The model with a head for ``task``: a classifier of ``num_labels`` (BERT), or CLIP's frozen
    zero-shot head from the task's class names and prompt templates (as the paper does)."""
    import instantsoup
    from instantsoup.models import read_config

    if read_config(model_dir).get("model_type") == "clip":
        model = instantsoup.load_model(model_dir, seed=seed)
        if not task.info.get("classnames"):
            raise SettingsError("a CLIP model needs an image task (class names for its zero-shot head)")
        model.zero_shot_head(task.info["classnames"], task.info["templates"])
        return model
    return instantsoup.load_model(model_dir, num_labels=task.num_labels, seed=seed)


def run_settings(settings: Settings, *, model_dir: str | None = None, fresh: bool = False,
                 keep_round_masks: bool = False, quiet: bool = False):
    """Validate, load model and task, name the run directory, run the method; return (ticket, run dir)."""
    import instantsoup
    from instantsoup import runs
    from instantsoup.methods import run_method
    from instantsoup.task import data_identity, load_task

    settings.validate()  # refuses bad settings before any work
    model_dir = model_dir or settings.run.model or _default_model()
    check_model_dir(model_dir)
    _set_threads(settings.run.threads)
    task = load_task(settings.data, model_dir, fit_max_length(model_dir, settings.train.max_length),
                     settings.train.seed)
    identity = settings.identity()
    identity["model"] = runs.model_identity(model_dir)
    identity["data"]["identity"] = data_identity(settings.data)
    root = Path(settings.run.out) / runs.run_name(settings.prune.method, identity)
    if fresh and root.exists():
        shutil.rmtree(root)
    model = load_for_task(model_dir, task, settings.train.seed)
    settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, model=model_dir))
    log.info("run directory %s", root)
    kw = {"keep_round_masks": True} if keep_round_masks and settings.prune.method == "isp" else {}
    ticket = run_method(model, task, settings, run_dir=root, progress=settings.run.progress and not quiet, **kw)
    return ticket, root


def _cmd_prune(args: argparse.Namespace) -> int:
    from instantsoup import report

    settings = _settings(args)
    ticket, root = run_settings(settings, fresh=not settings.run.resume, keep_round_masks=args.keep_round_masks)
    rows = report.load_rows([root / "ticket"])
    print(report.format_table(rows))
    print(f"ticket: {root / 'ticket'}  (masks.safetensors, checkpoint/, metrics.json)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from instantsoup import runs
    from instantsoup.task import load_task
    from instantsoup.train import Trainer

    check_model_dir(args.checkpoint)
    data = from_namespace(DataSettings, args)
    data.validate()
    _set_threads(args.threads)
    task = load_task(data, args.checkpoint, fit_max_length(args.checkpoint, args.max_length), args.seed)
    model = load_for_task(args.checkpoint, task)
    try:
        model.precision = args.precision
    except ValueError as e:  # INSTANTSOUP_ISA names a path this CPU lacks
        raise SettingsError(str(e)) from None
    if args.mask:
        try:
            model.set_masks(runs.load_arrays(args.mask))
        except (ValueError, TypeError) as e:  # names/shapes of another model, values not 0/1
            raise SettingsError(f"--mask {args.mask}: {e}") from None
    tr = Trainer(TrainSettings(batch_size=args.batch_size, max_length=args.max_length), task, progress=False)
    sd = model.state_dict()
    zeros = sum(int(np.count_nonzero(sd[n] == 0)) for n in model.prunable_names)
    out = {"sparsity": zeros / max(1, sum(sd[n].size for n in model.prunable_names))}  # exact zeros
    if args.mask:
        out["mask_sparsity"] = 1.0 - sum(int(np.count_nonzero(m)) for m in model.masks.values()) / max(
            1, sum(m.size for m in model.masks.values()))
    for split in (["validation", "test"] if args.split == "both" else [args.split]):
        out.update({f"{split}_{k}": v for k, v in tr.evaluate(model, split).items()})
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from instantsoup import report

    tickets = report.find_tickets(args.paths)
    if not tickets:
        print(f"no finished runs under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    rows = report.load_rows(tickets)
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


# sized for "a few minutes on 2 cores" with the default 6-layer MiniLM (~1-3 s per step of 16)
DEMO_DEFAULTS = {"sparsity": 0.7, "epochs": 1.5, "lr": 3e-4, "batch_size": 16, "max_length": 48,
                 "denoisers": 2, "lookahead": 4, "step": 0.35, "max_train_examples": 512,
                 "max_eval_examples": 300}


def _demo_baseline(settings: Settings) -> str:
    """One line that tells a reader how to judge the demo's accuracies."""
    import numpy as np

    from instantsoup import data as D
    from instantsoup.task import load_task

    task = load_task(settings.data, str(D.default_model_path()), settings.train.max_length, settings.train.seed)
    labels = np.asarray(task.test.labels)
    majority = float(np.bincount(labels).max() / len(labels))
    se = float(np.sqrt(0.75 * 0.25 / len(labels)))
    return (f"test split: {len(labels)} examples; always predicting the majority class scores {majority:.4f}; "
            f"one standard error of an accuracy near 0.75 is {se:.3f} (one seed: small gaps are noise). "
            f"steps = optimizer steps incl. ISP's denoiser look-ahead steps.")


def _cmd_demo(args: argparse.Namespace) -> int:
    from instantsoup import report

    t0 = time.perf_counter()
    base = Settings(
        train=TrainSettings(batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, seed=args.seed,
                            max_length=args.max_length, warmup_ratio=0.06, precision=args.precision),
        prune=PruneSettings(sparsity=args.sparsity, step=args.step, denoisers=args.denoisers,
                            lookahead=args.lookahead),
        data=DataSettings(task="default", max_train_examples=args.max_train_examples,
                          max_eval_examples=args.max_eval_examples),
        run=RunSettings(out=args.out, threads=args.threads, progress=not args.no_progress))
    roots = []
    for method in ("dense", "omp", "isp"):
        s = dataclasses.replace(base, prune=dataclasses.replace(
            base.prune, method=method, sparsity=0.0 if method == "dense" else args.sparsity))
        print(f"[demo] {method} ...", file=sys.stderr, flush=True)
        _, root = run_settings(s)
        roots.append(root / "ticket")
    rows = report.load_rows(roots)
    print(report.format_table(rows, ["method", "sparsity", report.main_metric(rows) or "sparsity", "steps",
                                     "seconds"]))
    print(_demo_baseline(base))
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

    pr = sub.add_parser("prune", help="draw a ticket with a method (ISP, IMP, OMP, GMP, random, dense, IMS)",
                        description="Prune a Hugging Face checkpoint on a task; writes a resumable run "
                        "directory <out>/<method>-<hash>/ with the ticket in ticket/.")
    for cls in (PruneSettings, TrainSettings, DataSettings, RunSettings):
        add_arguments(pr, cls)
    pr.add_argument("--keep-round-masks", action="store_true",
                    help="ISP: also store every round's main/denoiser/merged masks in the run directory "
                    "(not part of the run's hash)")
    pr.set_defaults(func=_cmd_prune)

    ev = sub.add_parser("eval", help="evaluate a checkpoint (optionally with a mask file) on a task")
    ev.add_argument("checkpoint", help="Hugging Face checkpoint directory")
    ev.add_argument("--mask", default="", help="mask file (safetensors, 1 = kept) to apply first")
    ev.add_argument("--split", default="both", choices=("validation", "test", "both"), help="which split")
    ev.add_argument("--batch-size", type=int, default=64, help="evaluation batch size")
    ev.add_argument("--max-length", type=int, default=128, help="maximum tokens per example")
    ev.add_argument("--seed", type=int, default=0, help="seed of the validation hold-out split")
    ev.add_argument("--threads", type=int, default=0, help="threads (0 = all available cores)")
    ev.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="precision of the matrix products (bf16: bf16 operands, fp32 accumulation)")
    add_arguments(ev, DataSettings)
    ev.set_defaults(func=_cmd_eval)

    rp = sub.add_parser("report", help="table and PNG plots from run directories")
    rp.add_argument("paths", nargs="+", help="run directories, ticket directories or folders of runs")
    rp.add_argument("--plots", default="", help="write accuracy/layer-sparsity/overlap/cost PNGs here")
    rp.add_argument("--csv", default="", help="also write the table as CSV")
    rp.set_defaults(func=_cmd_report)

    de = sub.add_parser("demo", help="dense vs one-shot vs ISP on the embedded model and dataset (minutes)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    de.add_argument("--out", default="instantsoup-demo", help="output folder (runs, tickets, plots)")
    for k, v in DEMO_DEFAULTS.items():
        de.add_argument("--" + k.replace("_", "-"), type=type(v), default=v, help=f"demo {k}")
    de.add_argument("--seed", type=int, default=0, help="seed")
    de.add_argument("--threads", type=int, default=0, help="threads (0 = all available cores)")
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

    try:
        return args.func(args)
    except (SettingsError, DataError, FileNotFoundError, MissingDemoPackage) as e:  # a message, no traceback
        print(f"instantsoup {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
