"""Helpers of test_parallel: a loopback Ray cluster started with `ray start` and stopped by process id."""
import shutil
import socket
import subprocess
import sys
import tempfile
import time


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
        out = subprocess.run(cmd, env=self.env, cwd=self.temp_dir, capture_output=True, text=True, timeout=timeout)
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
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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

