"""Independent cells in parallel: worker processes on this machine (``jobs``) or Ray tasks (``ray``).

A cell is ``(key, payload)``; ``fn(payload) -> dict`` runs it in a worker with ``threads`` kernel
threads (``fn`` must be a module-level function, which pickle sends by name; the payload must
pickle). Every result comes back to the driver, which hands it to ``on_done(key, result)`` as soon
as that cell finishes (a study appends its line to the results file there), so the cells finished
before an interruption are kept and a rerun skips them.

Ray (the optional extra ``instantsoup[ray]``): each cell is one task with ``num_cpus=threads``;
a task whose worker process or node dies is retried by Ray (``max_retries`` times) and, since a
cell's run directory resumes from its last finished round, a retry on the same node continues the
work. A cell that raises is not retried (the error is deterministic): ``on_error(key, exc)`` gets it.

Local processes: ``jobs`` workers, each running one cell at a time, started with ``spawn`` (never
``fork``: a forked child of a process whose OpenMP pool has run deadlocks in libgomp). A worker
that dies fails the cell it was running only (``on_error``); a fresh worker takes its place.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

Cells = Sequence[tuple[str, Any]]
OnDone = Callable[[str, dict], None]
OnError = Callable[[str, BaseException], None]


def run_in_worker(fn: Callable[[Any], dict], payload: Any, threads: int) -> dict:
    """What a worker runs for one cell: set the kernel thread count, then ``fn(payload)``."""
    import instantsoup

    if threads > 0:
        instantsoup.set_num_threads(threads)
    return fn(payload)


def threads_per_cell(threads: int, jobs: int) -> int:
    """``threads`` if given (> 0), else this machine's cores shared out between ``jobs`` workers."""
    from instantsoup._native import available_cores

    return threads if threads > 0 else max(1, available_cores() // max(1, jobs))


def run_cells(cells: Cells, fn: Callable[[Any], dict], *, threads: int, on_done: OnDone, on_error: OnError,
              jobs: int = 1, ray: bool = False, address: str | None = None, max_retries: int = 3) -> None:
    """Run every cell once (see the module docstring): in this process when ``jobs == 1`` and not
    ``ray``, else in ``jobs`` local worker processes, else as Ray tasks on the cluster at
    ``address`` (None: the cluster named by ``RAY_ADDRESS`` or started on this machine, else a new
    local one)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if ray:
        _run_ray(cells, fn, threads, on_done, on_error, address, max_retries)
    elif jobs == 1:
        for key, payload in cells:
            try:
                result = run_in_worker(fn, payload, threads)
            except Exception as e:  # noqa: BLE001 - one bad cell must not stop the others
                on_error(key, e)
            else:
                on_done(key, result)
    else:
        _run_local(cells, fn, threads, on_done, on_error, jobs)


def _worker(conn, fn, threads: int) -> None:
    """A local worker process: run the cells it is sent, one at a time, until told to stop (None)."""
    while True:
        try:
            payload = conn.recv()
        except EOFError:
            return
        if payload is None:
            return
        try:
            out = (True, run_in_worker(fn, payload, threads))
        except Exception as e:  # noqa: BLE001 - handed to the driver's on_error
            out = (False, e)
        try:
            conn.send(out)
        except Exception as e:  # noqa: BLE001 - an exception (or result) that does not pickle
            conn.send((False, RuntimeError(f"{out[1]!r} (could not send it back: {e})")))


class _Worker:
    def __init__(self, ctx, fn, threads: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, fn, threads), daemon=True)
        self.proc.start()
        child.close()

    def close(self, kill: bool) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _run_local(cells: Cells, fn, threads: int, on_done: OnDone, on_error: OnError, jobs: int) -> None:
    """``jobs`` spawned worker processes, each running one cell at a time. A worker that dies fails
    the cell it was running only; a fresh worker takes its place."""
    ctx = multiprocessing.get_context("spawn")
    todo = list(cells)[::-1]
    idle = [_Worker(ctx, fn, threads) for _ in range(min(jobs, len(todo)))]
    busy: dict[Any, tuple[_Worker, str]] = {}
    try:
        while todo or busy:
            while todo and idle:
                key, payload = todo.pop()
                w = idle.pop()
                try:
                    w.conn.send(payload)
                except Exception as e:  # noqa: BLE001 - a payload that does not pickle
                    idle.append(w)
                    on_error(key, e)
                    continue
                busy[w.conn] = (w, key)
            for conn in multiprocessing.connection.wait(list(busy)):
                w, key = busy.pop(conn)
                try:
                    ok, value = conn.recv()
                except EOFError:
                    w.proc.join()
                    ok, value = False, RuntimeError(f"its worker process died (exit code {w.proc.exitcode})")
                    w.close(kill=True)
                    if todo:
                        w = _Worker(ctx, fn, threads)
                    else:
                        w = None
                if w is not None:
                    idle.append(w)
                (on_done if ok else on_error)(key, value)
    finally:
        for w in idle:
            w.close(kill=False)
        for w, _ in busy.values():  # interrupted (e.g. Ctrl-C): leave no worker behind
            w.close(kill=True)


def _ray_module():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'instantsoup[ray]' (on the driver and every "
                           "node of the cluster)") from None
    return ray


def _run_ray(cells: Cells, fn, threads: int, on_done: OnDone, on_error: OnError, address: str | None,
             max_retries: int) -> None:
    ray = _ray_module()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(run_in_worker).options(num_cpus=max(1, threads), max_retries=max_retries,
                                                   retry_exceptions=False)
        pending = {remote.remote(fn, payload, threads): key for key, payload in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the cell raised: its own exception
                    on_error(key, e.cause if isinstance(e.cause, BaseException) else e)
                except ray.exceptions.RayError as e:  # worker/node lost more often than max_retries
                    on_error(key, e)
                else:
                    on_done(key, result)
    finally:
        if started_here:
            ray.shutdown()


def ray_map(fn: Callable[..., Any], payloads: Sequence[Any], *, threads: int, shared: tuple = (),
            address: str | None = None, max_retries: int = 3) -> list:
    """``[fn(*shared, p) for p in payloads]`` as parallel Ray tasks (``num_cpus=threads``), results in
    payload order. Each object of ``shared`` goes through Ray's object store once for all the tasks
    (numpy buffers and engine models travel without extra copies). Connects to Ray when this process
    is not connected yet (``address``: "local" starts a local Ray; else as ``ray.init``) and stays
    connected for later calls. A task that raises raises here (its own exception)."""
    ray = _ray_module()
    if not ray.is_initialized():
        ray.init(address=None if address in (None, "", "local") else address, log_to_driver=False,
                 configure_logging=False)
    refs = [ray.put(x) for x in shared]
    remote = ray.remote(_call_shared).options(num_cpus=max(1, threads), max_retries=max_retries,
                                              retry_exceptions=False)
    try:
        return ray.get([remote.remote(fn, threads, p, *refs) for p in payloads])
    except ray.exceptions.RayTaskError as e:
        raise e.cause if isinstance(e.cause, BaseException) else e


def _call_shared(fn: Callable[..., Any], threads: int, payload: Any, *shared: Any) -> Any:
    import instantsoup

    if threads > 0:
        instantsoup.set_num_threads(threads)
    return fn(*shared, payload)

