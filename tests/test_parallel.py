"""Cells in parallel (instantsoup.parallel): local processes and a two-node Ray cluster on loopback give
the sequential results bit for bit; a Ray worker killed mid-cell is retried and the run completes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import instantsoup
from conftest import subprocess_env
from instantsoup.parallel import run_cells, threads_per_cell
from parallel_cells import LoopbackRay, prune_cell, task_processes, wait_for
from test_cli import write_table

HERE = os.path.dirname(os.path.abspath(__file__))


def make_cells(tmp_path, model_dir, runs, seeds=(0, 1), methods=("omp", "random")):
    table = tmp_path / "toy.csv"
    if not table.exists():
        write_table(table, n=96)
    cells = []
    for seed in seeds:
        for method in methods:
            s = {"train": {"batch_size": 16, "lr": 1e-3, "epochs": 1, "max_length": 16, "seed": seed},
                 "prune": {"method": method, "sparsity": 0.5},
                 "data": {"task": str(table)},
                 "run": {"model": str(model_dir), "out": str(runs), "threads": 1, "progress": False}}
            cells.append((f"{method}/0.5/{seed}", s))
    return cells


def sequential(cells):
    out = {}
    run_cells(cells, prune_cell, threads=1, on_done=out.__setitem__,
              on_error=lambda k, e: pytest.fail(f"{k}: {e!r}"))
    return out


def comparable(result):
    return {k: v for k, v in result.items() if k != "pid"}


def driver_env():
    env = subprocess_env()
    env["PYTHONPATH"] = HERE + os.pathsep + env["PYTHONPATH"]  # workers import parallel_cells by name
    env.pop("RAY_ADDRESS", None)
    return env


def drive(cells, tmp_path, jobs, address=None, timeout=300):
    cells_file, results = tmp_path / "cells.json", tmp_path / "results.jsonl"
    cells_file.write_text(json.dumps(cells))
    return subprocess.Popen([sys.executable, os.path.join(HERE, "parallel_cells.py"), str(cells_file), str(results),
                             str(jobs), address or "-", "1"], env=driver_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True), results


def read_results(path):
    return {r.pop("key"): r for r in map(json.loads, path.read_text().splitlines())}


def test_threads_per_cell():
    assert threads_per_cell(3, 2) == 3
    assert threads_per_cell(0, 1) == instantsoup.available_cores()
    assert threads_per_cell(0, 10 * instantsoup.available_cores()) == 1


def test_sequential_runs_each_cell_and_reports_errors(tiny_bert_dir, tmp_path, one_thread):
    cells = make_cells(tmp_path, tiny_bert_dir, tmp_path / "runs", seeds=(0,), methods=("omp",))
    bad = ("bad", dict(cells[0][1], prune={"method": "omp", "sparsity": 1.5}))
    done, errors = {}, {}
    run_cells([bad] + cells, prune_cell, threads=1, on_done=done.__setitem__, on_error=errors.__setitem__)
    assert list(done) == ["omp/0.5/0"] and list(errors) == ["bad"]
    assert done["omp/0.5/0"]["threads"] == 1
    with pytest.raises(ValueError, match="jobs"):
        run_cells(cells, prune_cell, threads=1, jobs=0, on_done=print, on_error=print)


def test_local_processes_equal_sequential(tiny_bert_dir, tmp_path, one_thread):
    cells = make_cells(tmp_path, tiny_bert_dir, tmp_path / "runs-seq")
    want = sequential(cells)
    par_cells = make_cells(tmp_path, tiny_bert_dir, tmp_path / "runs-par")
    proc, results = drive(par_cells, tmp_path, jobs=2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    got = read_results(results)
    assert {k: comparable(v) for k, v in got.items()} == {k: comparable(v) for k, v in want.items()}
    assert len({v["pid"] for v in got.values()}) == 2 and os.getpid() not in {v["pid"] for v in got.values()}


@pytest.fixture
def ray_cluster():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'instantsoup[ray]')")
    pytest.importorskip("psutil", reason="the loopback cluster's processes are found with psutil")
    try:
        cluster = LoopbackRay(driver_env())
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"Ray cannot start a loopback cluster here: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def test_ray_cluster_equals_sequential_and_survives_a_killed_worker(ray_cluster, tiny_bert_dir, tmp_path,
                                                                    one_thread):
    cells = make_cells(tmp_path, tiny_bert_dir, tmp_path / "runs-seq")
    want = sequential(cells)
    ray_cells = make_cells(tmp_path, tiny_bert_dir, tmp_path / "runs-ray")
    proc, results = drive(ray_cells, tmp_path, jobs=1, address=ray_cluster.address)
    try:
        victims = wait_for(lambda: task_processes(ray_cluster), timeout=120)
        assert victims, "no Ray worker ever ran a cell"
        victims[0].kill()  # mid-cell: Ray retries the task on a new worker
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    got = read_results(results)
    assert {k: comparable(v) for k, v in got.items()} == {k: comparable(v) for k, v in want.items()}
    assert all(v["threads"] == 1 for v in got.values())
