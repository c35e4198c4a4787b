"""Issue 10, "nothing lost, nothing stale": one test (or more) per case, as a new user meets them.

Kills happen at named points through the ``INSTANTSOUP_KILL_AT`` hook (``runs.kill_point``);
two processes share a run directory; round files are truncated and flipped; paths are spelled
differently; a full and a read-only disk are real small tmpfs mounts where this machine allows it
(root), else simulated (ENOSPC / EROFS raised by the file system calls).
"""
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_bert, make_tiny_task, subprocess_env
from instantsoup import runs
from instantsoup.cli import main
from instantsoup.config import PruneSettings, RunSettings, Settings, TrainSettings


# ---- helpers ----------------------------------------------------------------------------------
def write_table(path, n=120, seed=0):
    from test_cli import write_table as write

    write(path, n, seed)
    return path


def prune_argv(model, table, out, *extra, method="isp"):
    return ["prune", "--method", method, "--model", str(model), "--task", str(table), "--sparsity", "0.5",
            "--step", "0.3", "--t", "2", "--denoisers", "2", "--lookahead", "2", "--epochs", "3",
            "--batch-size", "16", "--lr", "1e-3", "--out", str(out), "--no-progress", "--max-length", "16",
            "--threads", "1", *extra]


def cli_child(argv, cwd, kill_at=None):
    """``python -m instantsoup ARGV`` in a child; with ``kill_at`` it SIGKILLs itself at that point."""
    env = subprocess_env()
    env.pop(runs.KILL_ENV, None)
    if kill_at:
        env[runs.KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "instantsoup", *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def run_dirs(out):
    return sorted(p for p in Path(out).iterdir() if p.is_dir() and not p.name.startswith("."))


def tree_digest(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).rglob("*")) if p.is_file()}


def leftovers(d):
    return [p for p in Path(d).rglob(".tmp-*")] + [p for p in Path(d).rglob(".trash-*")]


def lib_settings(**run):
    return Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=3, seed=1),
                    prune=PruneSettings(method="isp", sparsity=0.6, step=0.3, t=2, denoisers=2, lookahead=3),
                    run=RunSettings(**run))


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "toy.csv")


@pytest.fixture(scope="module")
def finished_ticket(tmp_path_factory):
    """A finished tiny OMP ticket (no run directory) and its model factory."""
    import instantsoup
    from instantsoup.methods import one_shot

    d = build_tiny_bert(tmp_path_factory.mktemp("base"))
    make = lambda: instantsoup.load_model(str(d), num_labels=2, seed=0)  # noqa: E731
    s = Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=1, seed=1),
                 prune=PruneSettings(method="omp", sparsity=0.5))
    return one_shot(make(), make_tiny_task(vocab=60), s, progress=False), make, d


# ---- 1. exports never delete a folder instantsoup did not write ----------------------------------
def test_export_refuses_a_folder_it_did_not_write_and_keeps_the_users_model(finished_ticket, tmp_path):
    ticket, make, base = finished_ticket
    user = tmp_path / "user"
    shutil.copytree(base, user / "checkpoint")  # the base model in <dir>/checkpoint, as in the issue
    before = tree_digest(user)
    with pytest.raises(runs.RunDirError, match="not written by instantsoup"):
        ticket.export(user, make())
    with pytest.raises(runs.RunDirError, match="not written by instantsoup"):
        ticket.export(user / "checkpoint", make())  # the model folder itself
    assert tree_digest(user) == before and not leftovers(tmp_path)


def test_reexport_replaces_only_its_own_export_and_keeps_the_tokenizer(finished_ticket, tmp_path):
    ticket, make, base = finished_ticket
    out = tmp_path / "t"
    ticket.tokenizer_dir = str(base)
    ticket.export(out, make())
    assert (out / runs.EXPORT_MARKER).is_file() and (out / "checkpoint" / "vocab.txt").is_file()
    # the tokenizer source is now the previous export's checkpoint: the new one must still get it
    ticket.tokenizer_dir = str(out / "checkpoint")
    ticket.export(out, make())
    assert (out / "checkpoint" / "vocab.txt").read_bytes() == (base / "vocab.txt").read_bytes()
    assert not leftovers(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    ticket.export(empty, make())  # an empty folder is fine
    assert (empty / "ticket.json").is_file()


# ---- 2. run identity from contents, never path spellings -------------------------------------------
def test_path_spellings_name_the_same_run_and_resume_it(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    write_table(tmp_path / "toy.csv")
    shutil.copytree(tiny_bert_dir, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    assert main(prune_argv(tmp_path / "model", tmp_path / "toy.csv", tmp_path / "runs")) == 0
    (run,) = run_dirs(tmp_path / "runs")
    mtime = (run / "ticket" / "ticket.json").stat().st_mtime_ns
    capsys.readouterr()
    for model, data in (("model", "toy.csv"), ("./model/", "./toy.csv"), (str(tmp_path / "model"), "./toy.csv")):
        assert main(prune_argv(model, data, "runs")) == 0, capsys.readouterr().err
        assert run_dirs(tmp_path / "runs") == [run]
    assert (run / "ticket" / "ticket.json").stat().st_mtime_ns == mtime  # served, not recomputed


def test_tokenizer_and_data_contents_are_part_of_the_identity(tiny_bert_dir, tmp_path):
    from instantsoup.config import DataSettings

    shutil.copytree(tiny_bert_dir, tmp_path / "m")
    write_table(tmp_path / "a.csv")
    s = Settings(data=DataSettings(task=str(tmp_path / "a.csv")))
    before = runs.run_identity(s, tmp_path / "m")
    time.sleep(0.01)
    with open(tmp_path / "m" / "vocab.txt", "a") as f:
        f.write("extra\n")
    after = runs.run_identity(s, tmp_path / "m")
    assert before["model"] != after["model"]
    shutil.copyfile(tmp_path / "a.csv", tmp_path / "b.csv")  # same bytes, another name: the same data
    s_b = Settings(data=DataSettings(task=str(tmp_path / "b.csv")))
    assert runs.run_identity(s_b, tmp_path / "m") == after
    write_table(tmp_path / "b.csv", seed=1)
    assert runs.run_identity(s_b, tmp_path / "m")["data"] != after["data"]


def test_digests_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    from instantsoup import digests

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_DIGESTS", {})
    calls = []
    orig = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda p: calls.append(p) or orig(p))
    big = tmp_path / "w.bin"
    big.write_bytes(b"\1" * (1 << 20))
    d = digests.file_digest(big)
    assert digests.file_digest(tmp_path / "." / "w.bin") == d and len(calls) == 1  # another spelling, cached
    monkeypatch.setattr(digests, "_DIGESTS", {})  # a new process: the cache file answers
    assert digests.file_digest(big) == d and len(calls) == 1
    mtime = big.stat().st_mtime_ns
    big.write_bytes(b"\2" * (1 << 20))  # same size, new mtime: hashed again
    os.utime(big, ns=(mtime + 10**7, mtime + 10**7))  # (coarse clocks: make the new mtime visible)
    assert digests.file_digest(big) != d and len(calls) == 2


def test_a_refused_resume_names_the_fields_and_warns_that_no_resume_deletes(make_model, tmp_path):
    from instantsoup.config import SettingsError
    from instantsoup.methods import instant_soup

    task = make_tiny_task(vocab=60)
    instant_soup(make_model(), task, lib_settings(), run_dir=tmp_path / "run", progress=False)
    other = lib_settings()
    other.train.lr = 1e-3
    with pytest.raises(SettingsError) as e:
        instant_soup(make_model(), task, other, run_dir=tmp_path / "run", progress=False)
    assert "train differ" in str(e.value) and "DELETE" in str(e.value)


# ---- 4. one process per run directory ----------------------------------------------------------
def _isp_child(run_dir, model_dir, slow):
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "isp_child.py"), str(run_dir),
                             str(model_dir), "1" if slow else "0"], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_process_waits_for_the_lock_or_refuses_with_no_wait(make_model, tiny_bert_dir, tmp_path):
    from isp_child import settings as child_settings

    from instantsoup.methods import instant_soup

    ref = instant_soup(make_model(), make_tiny_task(vocab=60), child_settings(), run_dir=tmp_path / "ref",
                       progress=False)
    first = _isp_child(tmp_path / "run", tiny_bert_dir, slow=True)
    deadline = time.time() + 120
    while not runs.settings_path(tmp_path / "run").exists():  # written under the lock
        assert first.poll() is None, first.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.005)
    s = child_settings()
    s.run.wait = False
    with pytest.raises(runs.RunDirError, match="in use by another instantsoup process"):
        instant_soup(make_model(), make_tiny_task(vocab=60), s, run_dir=tmp_path / "run", progress=False)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    lock = runs.RunLock(tmp_path / "run")  # now this process works there: a second one waits
    try:
        second = _isp_child(tmp_path / "run", tiny_bert_dir, slow=False)
        line = second.stderr.readline()  # the child says it waits, then blocks on the lock
        assert "in use by another instantsoup process" in line and "waiting for it" in line, line
        time.sleep(0.5)
        assert second.poll() is None
    finally:
        lock.release()
    out2, err2 = second.communicate(timeout=300)
    assert second.returncode == 0 and "done" in out2, err2
    got = runs.load_arrays(tmp_path / "run" / "ticket" / "masks.safetensors")
    for k, v in ref.masks.items():
        np.testing.assert_array_equal(got[k], v)
    assert not leftovers(tmp_path / "run")


def test_no_wait_on_the_command_line(tiny_bert_dir, table, tmp_path, capsys):
    assert main(prune_argv(tiny_bert_dir, table, tmp_path / "runs")) == 0
    (run,) = run_dirs(tmp_path / "runs")
    lock = runs.RunLock(run)  # this process holds it: another one must not get in
    try:
        r = cli_child(prune_argv(tiny_bert_dir, table, tmp_path / "runs", "--no-wait"), tmp_path)
    finally:
        lock.release()
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("instantsoup prune: error: run directory")
    assert "in use" in r.stderr


# ---- 5. --no-resume never leaves a half-deleted run that serves its old ticket ------------------------
def test_no_resume_killed_while_deleting_leaves_no_old_ticket(tiny_bert_dir, table, tmp_path):
    argv = prune_argv(tiny_bert_dir, table, tmp_path / "runs")
    assert main(argv) == 0
    (run,) = run_dirs(tmp_path / "runs")
    r = cli_child(argv + ["--no-resume"], tmp_path, kill_at="trash-renamed")
    assert r.returncode == -9, r.stderr
    assert not (run / "ticket" / "ticket.json").exists()  # renamed aside at once, never half-deleted
    r = cli_child(argv, tmp_path)
    assert r.returncode == 0, r.stderr
    assert run_dirs(tmp_path / "runs") == [run] and not leftovers(tmp_path / "runs")
    assert not list((tmp_path / "runs").glob(".trash-*"))


# ---- 6. damaged round files: verified, discarded, resumed from the previous complete round ------------
def _interrupted_isp(make_model, tmp_path):
    """A finished reference run, and a run directory whose ticket and history were lost (as after a
    kill during fine-tuning)."""
    from instantsoup.methods import instant_soup

    task = make_tiny_task(vocab=60)
    ref = instant_soup(make_model(), task, lib_settings(), run_dir=tmp_path / "run", progress=False)
    shutil.rmtree(tmp_path / "run" / "ticket")
    return task, ref


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_latest_round_is_detected_and_recomputed(make_model, tmp_path, caplog, damage):
    from instantsoup.methods import instant_soup

    task, ref = _interrupted_isp(make_model, tmp_path)
    rounds = sorted((tmp_path / "run").glob("round_*"))
    f = runs.weights_file(rounds[-1]) if damage == "truncate" else runs.optim_file(rounds[-1])
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[-5] ^= 0x10  # still a valid safetensors file: only the checksum tells
    f.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="instantsoup.runs"):
        got = instant_soup(make_model(), task, lib_settings(), run_dir=tmp_path / "run", progress=False)
    text = caplog.text
    assert f"{rounds[-1]} is damaged" in text and f.name in text
    for k, v in ref.masks.items():
        np.testing.assert_array_equal(got.masks[k], v)


def test_fallback_to_the_previous_complete_round(tiny_bert_dir, table, tmp_path, caplog):
    argv = prune_argv(tiny_bert_dir, table, tmp_path / "runs")
    r = cli_child(argv, tmp_path, kill_at="stage-saved")  # round_000 written, the run killed at once
    assert r.returncode == -9, r.stderr
    (run,) = run_dirs(tmp_path / "runs")
    r = cli_child(argv, tmp_path, kill_at="stage-saved")  # round_001 written, round_000 not yet trimmed
    assert r.returncode == -9, r.stderr
    assert runs.has_state(run / "round_000") and runs.has_state(run / "round_001")
    w = runs.weights_file(run / "round_001")
    w.write_bytes(w.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="instantsoup.runs"):
        assert main(argv) == 0
    assert "resuming" in caplog.text and "from round_000" in caplog.text
    ref = tmp_path / "ref"
    assert main(prune_argv(tiny_bert_dir, table, ref)) == 0
    assert (run / "ticket" / "masks.safetensors").read_bytes() == \
        (run_dirs(ref)[0] / "ticket" / "masks.safetensors").read_bytes()


# ---- 8. the same command gives the same mask file bytes -------------------------------------------
def test_mask_files_are_byte_reproducible(finished_ticket, tmp_path):
    ticket = finished_ticket[0]
    digests = set()
    for i in range(4):
        ticket.save_masks(tmp_path / f"m{i}.safetensors")
        digests.add(hashlib.sha256((tmp_path / f"m{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    from instantsoup import MaskSet

    back = MaskSet.load(tmp_path / "m0.safetensors")
    assert back == ticket.masks and back.metadata["method"] == "omp"


def test_the_same_command_twice_gives_the_same_mask_sha256(tiny_bert_dir, table, tmp_path):
    argv = lambda out: prune_argv(tiny_bert_dir, table, out, method="omp")  # noqa: E731
    a, b = cli_child(argv(tmp_path / "a"), tmp_path), cli_child(argv(tmp_path / "b"), tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa = run_dirs(tmp_path / "a")[0] / "ticket" / "masks.safetensors"
    fb = run_dirs(tmp_path / "b")[0] / "ticket" / "masks.safetensors"
    assert fa.read_bytes() == fb.read_bytes()


# ---- 9. every expected failure is one `instantsoup CMD: error:` line with exit 2 -----------------------
def _one_error_line(capsys, cmd="prune"):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"instantsoup {cmd}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unsupported_model_type_and_corrupt_weights(tiny_bert_dir, table, tmp_path, capsys):
    bad = tmp_path / "gpt"
    shutil.copytree(tiny_bert_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(cfg))
    assert main(prune_argv(bad, table, tmp_path / "runs")) == 2
    assert "gpt2" in _one_error_line(capsys)
    torn = tmp_path / "torn"
    shutil.copytree(tiny_bert_dir, torn)
    w = torn / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    assert main(prune_argv(torn, table, tmp_path / "runs")) == 2
    assert "model.safetensors" in _one_error_line(capsys)
    assert main(["eval", str(torn), "--task", str(table)]) == 2
    assert "model.safetensors" in _one_error_line(capsys, "eval")


def test_nan_during_training(tiny_bert_dir, table, tmp_path, capsys):
    argv = prune_argv(tiny_bert_dir, table, tmp_path / "runs", method="omp")
    argv[argv.index("--lr") + 1] = "1e30"
    assert main(argv) == 2
    assert "nan" in _one_error_line(capsys).lower()


def test_garbage_mask_file_and_two_row_csv(tiny_bert_dir, table, tmp_path, capsys):
    garbage = tmp_path / "mask.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert main(["eval", str(tiny_bert_dir), "--task", str(table), "--mask", str(garbage)]) == 2
    assert "mask.safetensors" in _one_error_line(capsys, "eval")
    small = tmp_path / "small.csv"
    small.write_text("sentence,label\nw1 w2,0\nw3 w4,1\n")
    assert main(prune_argv(tiny_bert_dir, small, tmp_path / "runs")) == 2
    _one_error_line(capsys)


@contextlib.contextmanager
def small_filesystem(path, size_kb, read_only=False):
    """A real tmpfs of ``size_kb`` at ``path`` when this process may mount one, else None."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    ok = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield bool(ok)
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_is_one_line_and_leaves_no_temporaries(tiny_bert_dir, table, tmp_path, capsys, monkeypatch):
    with small_filesystem(tmp_path / "disk", 200) as real:
        if not real:  # simulate: every fsync of a file in the output folder says the disk is full
            orig = os.fsync

            def fsync(fd):
                orig(fd)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", fsync)
        rc = main(prune_argv(tiny_bert_dir, table, tmp_path / "disk" / "runs"))
        line = _one_error_line(capsys)
        assert rc == 2 and "No space left on device" in line and "disk is full" in line
        assert not leftovers(tmp_path / "disk")


def test_read_only_out_is_one_line(tiny_bert_dir, table, tmp_path, capsys, monkeypatch):
    with small_filesystem(tmp_path / "ro", 64, read_only=True) as real:
        if not real:
            def mkdir(*a, **k):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(a[0]))

            monkeypatch.setattr(os, "mkdir", mkdir)
        assert main(prune_argv(tiny_bert_dir, table, tmp_path / "ro" / "runs")) == 2
        assert "Read-only file system" in _one_error_line(capsys)


def test_verbose_shows_the_traceback(tiny_bert_dir, tmp_path, capsys):
    assert main(["-v", "eval", str(tiny_bert_dir), "--task", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "instantsoup eval: error: " in err


# ---- 10. smaller ones --------------------------------------------------------------------------
def test_history_is_consistent_after_a_kill_around_the_ticket(make_model, tiny_bert_dir, table, tmp_path):
    from instantsoup.methods import instant_soup

    # instantsoup 0.1 wrote ticket.json, then history.jsonl: a kill between left the history stale
    task = make_tiny_task(vocab=60)
    t = instant_soup(make_model(), task, lib_settings(), run_dir=tmp_path / "run", progress=False)
    hist = runs.history_path(tmp_path / "run")
    hist.write_text("".join(hist.read_text().splitlines(keepends=True)[:-2]))
    instant_soup(make_model(), task, lib_settings(), run_dir=tmp_path / "run", progress=False)
    assert runs.read_history(tmp_path / "run") == runs.to_jsonable(t.history)
    # now: history first, then the ticket; a kill in between resumes into a consistent pair
    argv = prune_argv(tiny_bert_dir, table, tmp_path / "runs")
    r = cli_child(argv, tmp_path, kill_at="history-written")
    assert r.returncode == -9, r.stderr
    (run,) = run_dirs(tmp_path / "runs")
    assert not (run / "ticket").exists()
    assert cli_child(argv, tmp_path).returncode == 0
    assert runs.read_history(run) == runs.read_json(run / "ticket" / "ticket.json")["history"]


def test_no_temporaries_after_a_kill_during_export(tiny_bert_dir, table, tmp_path):
    argv = prune_argv(tiny_bert_dir, table, tmp_path / "runs", method="omp")
    r = cli_child(argv, tmp_path, kill_at="export-written")
    assert r.returncode == -9, r.stderr
    (run,) = run_dirs(tmp_path / "runs")
    assert not (run / "ticket").exists()  # no half-written ticket
    assert cli_child(argv, tmp_path).returncode == 0
    assert not leftovers(run) and (run / "ticket" / "ticket.json").is_file()
    assert not [p for p in (run / "ticket").rglob(".*") if p.name != runs.EXPORT_MARKER]
    # a 0.1 export killed half-way (in place: masks, no ticket.json, no marker) is redone
    shutil.rmtree(run / "ticket" / "checkpoint")
    (run / "ticket" / "ticket.json").unlink()
    (run / "ticket" / runs.EXPORT_MARKER).unlink()
    assert cli_child(argv, tmp_path).returncode == 0
    assert (run / "ticket" / "checkpoint" / "model.safetensors").is_file()


def test_report_skips_a_bad_run_and_reports_the_others(tiny_bert_dir, table, tmp_path, capsys):
    for sp in ("0.5", "0.6"):
        argv = prune_argv(tiny_bert_dir, table, tmp_path / "runs", method="omp")
        argv[argv.index("--sparsity") + 1] = sp
        assert main(argv) == 0
    bad, good = run_dirs(tmp_path / "runs")
    (bad / "ticket" / "ticket.json").write_text("{truncated")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert good.name in out and f"skipping {bad / 'ticket'}" in err


def test_threads_are_capped_at_the_available_cores(caplog):
    import instantsoup
    from instantsoup.runner import max_threads, set_threads

    prev = instantsoup.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING):
            set_threads(1000)
        assert instantsoup.get_num_threads() == max_threads() <= os.cpu_count()
        assert "--threads 1000 is more than" in caplog.text
    finally:
        instantsoup.set_num_threads(prev)


def test_files_follow_the_umask(make_model, tmp_path):
    from instantsoup.methods import instant_soup

    old = os.umask(0o022)
    try:
        instant_soup(make_model(), make_tiny_task(vocab=60), lib_settings(), run_dir=tmp_path / "run",
                     progress=False)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in (tmp_path / "run").rglob("*")}
    assert {m for p, m in modes.items() if Path(tmp_path / p).is_file()} == {0o644}, modes
    assert {m for p, m in modes.items() if Path(tmp_path / p).is_dir()} == {0o755}, modes


def test_run_directory_keeps_one_resumable_state(tmp_path):
    import instantsoup
    from instantsoup.methods import instant_soup

    # the default model's proportions: about half of the parameters in the embeddings
    model_dir = build_tiny_bert(tmp_path / "m", vocab_size=1000)
    s = lib_settings()
    s.prune.step, s.prune.t, s.train.epochs = 0.15, 1, 6  # 4+ rounds
    instant_soup(instantsoup.load_model(str(model_dir), num_labels=2, seed=0), make_tiny_task(vocab=60), s,
                 run_dir=tmp_path / "run", progress=False)
    rounds = sorted((tmp_path / "run").glob("round_*"))
    assert len(rounds) >= 4
    assert [runs.has_state(r) for r in rounds] == [False] * (len(rounds) - 1) + [True]
    state = sum((rounds[-1] / n).stat().st_size for n in runs.STATE_FILES)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    tensors = sum(p.stat().st_size for p in files if p.suffix == ".safetensors")
    small = sum(p.stat().st_size for p in files if p.suffix != ".safetensors")  # JSON, vocab: model-size free
    assert tensors <= 1.5 * state and small < 100_000, (tensors, small, state)
    for r in rounds:  # every round keeps its (bit-packed) masks and verifies
        assert runs.packed_masks_file(r).is_file() and runs.verify(r) is None
