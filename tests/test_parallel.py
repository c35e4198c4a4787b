"""`instantsoup study --jobs N` (local processes) and `--ray ADDRESS` (a two-node Ray cluster on loopback)
give the sequential results bit for bit; a Ray worker killed mid-cell is retried and the study completes;
a partly filled results file is resumed. Also instantsoup.parallel.run_cells on its own."""
import json
import os
import subprocess
import sys

import pytest

import instantsoup
from conftest import subprocess_env
from instantsoup import study as S
from instantsoup.cli import main
from instantsoup.parallel import run_cells, threads_per_cell
from ray_cluster import LoopbackRay, task_processes, wait_for
from test_study import write_study

METHODS = [{"label": "omp", "method": "omp"}, {"label": "random", "method": "random"}]
# differ between runs of the same cell: wall times, where it ran, when
VOLATILE = {"cell_seconds", "wall_seconds", "run_wall_seconds", "train_seconds", "score_seconds", "finished", "run_dir", "host"}


def assert_same(got, want):
    got, want = comparable(got), comparable(want)
    assert sorted(got) == sorted(want)
    for cell in want:
        diff = {k for k in want[cell].keys() | got[cell].keys() if want[cell].get(k) != got[cell].get(k)}
        assert not diff, (cell, {k: (got[cell].get(k), want[cell].get(k)) for k in diff})


def comparable(records):
    out = {}
    for r in records:
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        r["settings"] = dict(r["settings"], run={k: v for k, v in r["settings"]["run"].items() if k != "out"})
        out[r["cell"]] = r
    return out


def study_file(tmp_path, model_dir, name):
    """The toy study (one data table for all) with its own results file and run directories."""
    d = json.loads(write_study(tmp_path, model_dir, methods=METHODS).read_text())
    d.update(results=str(tmp_path / name / "toy.jsonl"), runs=str(tmp_path / name / "runs"))
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(d))
    return path, tmp_path / name / "toy.jsonl"


def sequential_records(tiny_bert_dir, tmp_path):
    path, results = study_file(tmp_path, tiny_bert_dir, "seq")
    assert main(["study", str(path)]) == 0
    return S.read_records(results)


def study_cli(args, cwd):
    """`instantsoup study ARGS` in a child started in ``cwd`` (not a source tree: the child must import
    the instantsoup under test, installed or built in place)."""
    return subprocess.Popen([sys.executable, "-m", "instantsoup", "study", *args], env=subprocess_env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _square(x):
    if x < 0:
        raise ValueError(f"negative: {x}")
    if x == 99:
        os._exit(3)  # the worker process dies
    return {"y": x * x, "threads": instantsoup.get_num_threads(), "pid": os.getpid()}


def test_threads_per_cell():
    assert threads_per_cell(3, 2) == 3
    assert threads_per_cell(0, 1) == instantsoup.available_cores()
    assert threads_per_cell(0, 10 * instantsoup.available_cores()) == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_cells_reports_results_and_errors(jobs, one_thread):
    done, errors = {}, {}
    cells = [("a", 2), ("bad", -1), ("b", 3)] + ([("dies", 99), ("c", 4)] if jobs > 1 else [])
    run_cells(cells, _square, threads=1, jobs=jobs, on_done=done.__setitem__, on_error=errors.__setitem__)
    want = {"a": 4, "b": 9} | ({"c": 16} if jobs > 1 else {})
    assert {k: v["y"] for k, v in done.items()} == want
    assert all(v["threads"] == 1 for v in done.values())
    assert isinstance(errors.pop("bad"), ValueError)
    if jobs > 1:
        assert "died" in str(errors.pop("dies"))
        assert os.getpid() not in {v["pid"] for v in done.values()}
    assert not errors
    with pytest.raises(ValueError, match="jobs"):
        run_cells(cells, _square, threads=1, jobs=0, on_done=print, on_error=print)


def test_study_jobs_equals_sequential(tiny_bert_dir, tmp_path, one_thread):
    want = sequential_records(tiny_bert_dir, tmp_path)
    assert len(want) == 4
    path, results = study_file(tmp_path, tiny_bert_dir, "par")
    proc = study_cli([str(path), "--jobs", "2"], tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "4 cells to run as 2 local processes, 1 thread(s) each" in out
    assert_same(S.read_records(results), want)


def test_study_ray_without_ray_or_cluster_is_an_error_line(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    path = write_study(tmp_path, tiny_bert_dir, methods=METHODS[:1], seeds=(0,))
    assert main(["study", str(path), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["study", str(path), "--ray"]) == 2
    assert "pip install 'instantsoup[ray]'" in capsys.readouterr().err
    assert main(["prune", "--method", "isp", "--model", str(tiny_bert_dir), "--task", str(tmp_path / "toy.csv"),
                 "--out", str(tmp_path / "runs"), "--ray", "auto"]) == 2
    assert "pip install 'instantsoup[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'instantsoup[ray]')")
    pytest.importorskip("psutil", reason="the loopback cluster's processes are found with psutil")
    env = subprocess_env()
    env.pop("RAY_ADDRESS", None)
    try:
        cluster = LoopbackRay(env)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"Ray cannot start a loopback cluster here: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_study_on_ray_equals_sequential_resumes_and_survives_a_killed_worker(ray_cluster, tiny_bert_dir,
                                                                             tmp_path, one_thread):
    seq = sequential_records(tiny_bert_dir, tmp_path)
    path, results = study_file(tmp_path, tiny_bert_dir, "ray")
    S.append_record(results, seq[0])  # a partly filled results file: that cell is not run again
    proc = study_cli([str(path), "--ray", ray_cluster.address], tmp_path)
    try:
        victims = wait_for(lambda: task_processes(ray_cluster), timeout=180)
        assert victims, "no Ray worker ever ran a cell"
        victims[0].kill()  # mid-cell: Ray retries the task on a fresh worker
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "3 cells to run as Ray tasks" in out and "ran 3, already done 1, failed 0" in out
    assert_same(S.read_records(results), seq)
    assert len(results.read_text().splitlines()) == 4


@pytest.mark.parametrize("variant", ["soup", "released"])
def test_isp_denoisers_on_ray_equal_sequential(ray_cluster, tiny_bert_dir, tmp_path, variant, one_thread,
                                               monkeypatch):
    import dataclasses

    import numpy as np
    import ray

    from instantsoup import cli
    from instantsoup.config import settings_from_dict
    from test_cli import write_table

    write_table(tmp_path / "toy.csv", n=120)
    prune = dict(step=0.3, t=2) if variant != "released" else dict(step=0.5, t=1)
    d = {"train": {"batch_size": 16, "lr": 5e-3, "epochs": 4, "max_length": 16, "seed": 3, "warmup_steps": 4},
         "prune": {"method": "isp", "variant": variant, "sparsity": 0.6, "denoisers": 3, "lookahead": 2, **prune},
         "data": {"task": str(tmp_path / "toy.csv")},
         "run": {"model": str(tiny_bert_dir), "out": str(tmp_path / "seq"), "threads": 1, "progress": False}}
    s = settings_from_dict(d)
    want, _ = cli.run_settings(s, quiet=True)
    from instantsoup import parallel

    calls = []
    real_map = parallel.ray_map
    monkeypatch.setattr(parallel, "ray_map", lambda fn, jobs, **kw: calls.append(len(jobs)) or real_map(fn, jobs, **kw))
    s_ray = dataclasses.replace(s, run=dataclasses.replace(s.run, out=str(tmp_path / "ray"), ray=ray_cluster.address))
    try:
        got, _ = cli.run_settings(s_ray, quiet=True)
    finally:
        ray.shutdown()
    rounds = [r for r in want.history if r.get("event") == "round"]
    assert rounds and all(len(r["denoisers"]) == 3 for r in rounds)
    assert calls == [3] * len(rounds)  # every round's denoisers went to Ray
    np.testing.assert_array_equal(got.masks.flat, want.masks.flat)
    for k in want.weights:
        np.testing.assert_array_equal(got.weights[k], want.weights[k])
    strip = lambda h: [{k: v for k, v in r.items() if k != "cost_steps"} for r in h if r.get("event") == "round"]  # noqa: E731
    assert strip(got.history) == strip(want.history)  # losses, overlaps, sparsities of every denoiser
    for f in ("steps", "examples", "tokens", "flops"):
        assert getattr(got.cost.stage("denoisers"), f) == getattr(want.cost.stage("denoisers"), f)
    assert got.cost.total().steps == want.cost.total().steps
