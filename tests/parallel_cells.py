"""Helpers of test_parallel: a cell function (one prune run from a settings dict) that worker processes
and Ray workers import by name, a driver that runs cells and streams results to a JSONL file, and a
loopback Ray cluster started with `ray start` and stopped by process id."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np


def prune_cell(settings: dict) -> dict:
    """Run one prune (resumable run directory) and return what must not depend on where it ran."""
    import instantsoup
    from instantsoup import cli
    from instantsoup.config import settings_from_dict

    ticket, root = cli.run_settings(settings_from_dict(settings), quiet=True)
    weights = hashlib.sha256()
    for k in sorted(ticket.weights):
        weights.update(np.ascontiguousarray(ticket.weights[k]).tobytes())
    return {"masks_sha256": hashlib.sha256(ticket.masks.flat.tobytes()).hexdigest(),
            "weights_sha256": weights.hexdigest(), "sparsity": ticket.sparsity,
            "metrics": {k: v for k, v in ticket.metrics.items() if k.startswith(("val_", "test_"))},
            "threads": instantsoup.get_num_threads(), "pid": os.getpid()}


def drive(cells_file: str, results_file: str, jobs: int, address: str | None, threads: int) -> None:
    """Run the cells of ``cells_file`` ([[key, settings], ...]) whose key is not in ``results_file``;
    append one line per finished cell as it arrives."""
    from instantsoup.parallel import run_cells

    done = set()
    if os.path.exists(results_file):
        done = {json.loads(line)["key"] for line in open(results_file) if line.strip()}
    cells = [(k, s) for k, s in json.load(open(cells_file)) if k not in done]

    def on_done(key, result):
        with open(results_file, "a") as f:
            f.write(json.dumps({"key": key, **result}) + "\n")

    def on_error(key, exc):
        raise SystemExit(f"cell {key} failed: {exc!r}")

    run_cells(cells, prune_cell, threads=threads, jobs=jobs, ray=address is not None,
              address=address or None, on_done=on_done, on_error=on_error)


class LoopbackRay:
    """A head and one worker node (`ray start`, one CPU each) on this machine; ``stop()`` kills exactly
    the processes they started (found by their temp directory and port), never `ray stop`."""

    def __init__(self, env: dict, timeout: float = 120):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.temp_dir = tempfile.mkdtemp(prefix="isray", dir="/tmp")  # short: unix socket paths
        self.address = f"127.0.0.1:{self.port}"
        self.env = env
        ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus=1", "--disable-usage-stats"]
        try:
            self._run(ray + ["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                             "--include-dashboard=false", f"--temp-dir={self.temp_dir}"], timeout)
            self._run(ray + [f"--address={self.address}"], timeout)
        except BaseException:
            self.stop()
            raise

    def _run(self, cmd, timeout):
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[3:])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def processes(self):
        import psutil

        mine = []
        for p in psutil.process_iter(["cmdline"]):
            args = p.info["cmdline"] or []
            if any(self.temp_dir in a or a.endswith(f":{self.port}") for a in args):
                mine.append(p)
        out = set(mine)
        for p in mine:
            try:
                out.update(p.children(recursive=True))
            except psutil.Error:
                pass
        return out

    def stop(self):
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(procs), timeout=30)


def task_processes(cluster: LoopbackRay):
    """Ray worker processes of ``cluster`` running a cell now (Ray names them after the task)."""
    import psutil

    out = []
    for p in cluster.processes():
        try:
            if "run_in_worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def wait_for(predicate, timeout: float, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


if __name__ == "__main__":  # python parallel_cells.py CELLS RESULTS JOBS ADDRESS|- THREADS
    drive(sys.argv[1], sys.argv[2], int(sys.argv[3]), None if sys.argv[4] == "-" else sys.argv[4], int(sys.argv[5]))
