"""The instantsoup command: --help everywhere, refusals before work, report, prune/eval end to end."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_tiny_task, subprocess_env
from instantsoup.cli import main
from instantsoup.methods import METHODS
from test_methods import settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cmd", [[], ["prune"], ["eval"], ["report"], ["demo"], ["info"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(cmd + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: instantsoup" in out
    if cmd == ["prune"]:
        for flag in ("--denoisers", "--lookahead", "--merge", "--sparsity", "--epochs", "--resume", "--threads",
                     "--rewind-step", "--soup"):
            assert flag in out


@pytest.mark.parametrize("args, msg", [
    (["--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["--method", "isp", "--step", "0"], "step must be in (0, 1)"),
    (["--model", "."], "has no config.json"),
    (["--epochs", "-1"], "epochs must be > 0"),
])
def test_prune_refuses_bad_settings_before_work(args, msg, tmp_path, capsys):
    rc = main(["prune", "--out", str(tmp_path / "runs"), *args])
    assert rc == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_data_files_get_a_message_not_a_traceback(tiny_bert_dir, tmp_path, capsys):
    table = tmp_path / "d.csv"
    table.write_text("sentence,label\nw1 w2,0\nw3,1\n")
    rc = main(["prune", "--method", "omp", "--model", str(tiny_bert_dir), "--task", str(table),
               "--label-column", "nope", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 2
    assert f"instantsoup prune: error: {table}:1: missing column" in capsys.readouterr().err
    (tmp_path / "d.txt").write_text("w1 w2\n")
    rc = main(["prune", "--method", "omp", "--model", str(tiny_bert_dir), "--task", str(tmp_path / "d.txt"),
               "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 2 and "cannot tell the format" in capsys.readouterr().err
    rc = main(["eval", str(tiny_bert_dir), "--task", str(table), "--mask", str(tmp_path / "none.safetensors")])
    assert rc == 2
    assert "none.safetensors" in capsys.readouterr().err
    from safetensors.numpy import save_file

    save_file({"bert.encoder.layer.9.output.dense.weight": np.ones((32, 64), np.uint8)}, str(tmp_path / "m.st"))
    rc = main(["eval", str(tiny_bert_dir), "--task", str(table), "--mask", str(tmp_path / "m.st")])
    assert rc == 2
    assert "unknown mask name 'bert.encoder.layer.9" in capsys.readouterr().err


def test_missing_demo_package_gets_the_install_command_not_a_traceback(tmp_path, capsys, monkeypatch):
    import instantsoup.data.default as default

    monkeypatch.setattr(default, "MODEL_MODULE", "no_such_module_for_instantsoup")
    rc = main(["prune", "--method", "dense", "--sparsity", "0", "--out", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "instantsoup prune: error:" in err and "pip install" in err


def test_texts_longer_than_the_model_positions_are_truncated_there(tiny_bert_dir, tmp_path, capsys):
    # the tiny model has 64 positions; --max-length defaults to 128
    rng = np.random.default_rng(0)
    table = tmp_path / "long.csv"
    table.write_text("sentence,label\n" + "".join(
        " ".join(f"w{j}" for j in rng.integers(1, 50, 100)) + f",{i % 2}\n" for i in range(40)))
    args = ["--task", str(table), "--batch-size", "8", "--epochs", "1"]
    assert main(["prune", "--method", "omp", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "runs"),
                 "--no-progress", *args]) == 0
    assert main(["eval", str(tiny_bert_dir), "--task", str(table)]) == 0


def test_unknown_method_or_merge_rule_is_refused(capsys):
    for args in (["--method", "snip"], ["--merge", "mean"]):
        with pytest.raises(SystemExit) as e:
            main(["prune", *args])
        assert e.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_report_table_and_plots(make_model, tmp_path, capsys):
    task = make_tiny_task(vocab=60)
    for method, sp in (("dense", 0.0), ("omp", 0.6), ("isp", 0.6), ("random", 0.6)):
        METHODS[method](make_model(), task, settings(method, sparsity=sp), run_dir=tmp_path / "runs" / method,
                        progress=False)
    rc = main(["report", str(tmp_path / "runs"), "--plots", str(tmp_path / "plots"), "--csv", str(tmp_path / "t.csv")])
    assert rc == 0
    out = capsys.readouterr().out
    for m in ("dense", "omp", "isp", "random", "test_accuracy", "steps", "flops"):
        assert m in out
    for name in ("accuracy_vs_sparsity", "layer_sparsity", "mask_overlap", "cost"):
        p = tmp_path / "plots" / f"{name}.png"
        assert p.exists() and p.stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert sorted(r["method"] for r in rows) == ["dense", "isp", "omp", "random"]
    assert main(["report", str(tmp_path / "nothing")]) == 2


def write_table(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for _ in range(n):
            toks = rng.integers(0, 40, size=int(rng.integers(3, 9)))
            w.writerow([" ".join(f"w{t}" for t in toks), int((toks >= 20).sum() * 2 > len(toks))])


def test_prune_eval_end_to_end_and_transformers_logits(tiny_bert_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification

    import instantsoup

    table = tmp_path / "toy.csv"
    write_table(table)
    argv = ["prune", "--method", "isp", "--model", str(tiny_bert_dir), "--task", str(table), "--sparsity", "0.5",
            "--step", "0.3", "--t", "2", "--denoisers", "2", "--lookahead", "2", "--epochs", "3",
            "--batch-size", "16", "--lr", "1e-3", "--out", str(tmp_path / "runs"), "--no-progress",
            "--max-length", "16"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "isp" in out
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    tdir = run / "ticket"
    ck = tdir / "checkpoint"
    assert (ck / "vocab.txt").exists()
    # the pruned checkpoint loads in transformers and gives our logits
    ours = instantsoup.load_model(str(ck))
    hf = AutoModelForSequenceClassification.from_pretrained(str(ck)).eval()
    ids = np.array([[2, 10, 11, 12, 3, 0], [2, 20, 21, 3, 0, 0]], dtype=np.int64)
    am = (ids != 0).astype(np.int64)
    ours.train(False)
    a = ours.forward({"input_ids": ids, "attention_mask": am, "token_type_ids": np.zeros_like(ids)})
    with torch.no_grad():
        b = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(am)).logits.numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # rerun: no work (the same run directory, the ticket is reused)
    mtime = (tdir / "ticket.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (tdir / "ticket.json").stat().st_mtime_ns == mtime  # not even re-exported
    assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) == 1
    assert "isp" in capsys.readouterr().out
    # eval with the mask file
    assert main(["eval", str(ck), "--mask", str(tdir / "masks.safetensors"), "--task", str(table),
                 "--max-length", "16"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sparsity"] == pytest.approx(0.5, abs=1e-3) and "test_accuracy" in res


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "instantsoup", "info", "--json"], capture_output=True, text=True,
                       env=subprocess_env(), cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0 and "num_threads" in json.loads(r.stdout)


def test_cli_prune_killed_then_resume_gives_the_same_mask(tiny_bert_dir, tmp_path):
    import signal
    import time

    from instantsoup import runs

    table = tmp_path / "toy.csv"
    write_table(table, n=200)

    def argv(out):
        return [sys.executable, "-m", "instantsoup", "prune", "--method", "isp", "--model", str(tiny_bert_dir),
                "--task", str(table), "--sparsity", "0.6", "--step", "0.3", "--t", "15", "--denoisers", "2",
                "--lookahead", "10", "--epochs", "12", "--batch-size", "8", "--lr", "1e-3", "--out", str(out),
                "--no-progress", "--max-length", "16", "--threads", "1"]

    env = subprocess_env()
    # cwd elsewhere: `python -m` puts the cwd first on sys.path, and the source tree has no _C
    ref = subprocess.Popen(argv(tmp_path / "ref"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           cwd=tmp_path)
    victim = subprocess.Popen(argv(tmp_path / "run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=tmp_path)
    deadline = time.time() + 120
    while not list((tmp_path / "run").glob("*/round_000")):
        assert victim.poll() is None, victim.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    (run,) = [p for p in (tmp_path / "run").iterdir() if p.is_dir()]
    assert not (run / "ticket").exists()
    assert ref.wait(timeout=300) == 0, ref.communicate()[1]
    resumed = subprocess.run(argv(tmp_path / "run") + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (ref_run,) = [p for p in (tmp_path / "ref").iterdir() if p.is_dir()]
    assert ref_run.name == run.name  # same settings -> same run directory name
    a = runs.load_arrays(ref_run / "ticket" / "masks.safetensors")
    b = runs.load_arrays(run / "ticket" / "masks.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def write_image_folder(root, n_per_class=(24, 8), seed=0):
    """root/{train,test}/{red,green,blue}/*.png: noisy 20x20 images, class = dominant channel."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), n_per_class):
        for c, name in enumerate(("red", "green", "blue")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 90, (20, 20, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def test_cli_prune_clip_on_an_image_folder(tmp_path, capsys):
    pytest.importorskip("PIL")
    import warnings

    import torch
    import transformers
    from clip_helpers import tiny_clip

    import instantsoup

    ck = tmp_path / "clip"
    ck.mkdir()
    tiny_clip(ck)
    data = write_image_folder(tmp_path / "images")
    argv = ["prune", "--method", "isp", "--model", str(ck), "--task", "image_folder", "--data-dir", str(data),
            "--sparsity", "0.5", "--step", "0.3", "--t", "2", "--denoisers", "2", "--lookahead", "2", "--epochs", "4",
            "--batch-size", "16", "--lr", "1e-3", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    assert "isp" in capsys.readouterr().out
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    ck_out = run / "ticket" / "checkpoint"
    masks = instantsoup.MaskSet.load(run / "ticket" / "masks.safetensors")
    assert abs(masks.sparsity - 0.5) < 1e-3 and all("vision_model" in k for k in masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = transformers.CLIPModel.from_pretrained(ck_out)
    sd = back.state_dict()
    for k, m in masks.items():
        assert (sd[k].numpy()[np.asarray(m) == 0] == 0).all(), k
    assert main(["eval", str(ck_out), "--task", "image_folder", "--data-dir", str(data)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sparsity"] == pytest.approx(0.5, abs=1e-3) and 0 <= res["test_accuracy"] <= 1
    del torch


def _default_packages_present():
    try:
        from instantsoup import data

        data.default_model_path()
        data.default_task(train_size=8, validation_size=8)
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _default_packages_present(), reason="needs the default model and data packages")
def test_demo_command_runs_reduced(tmp_path, capsys):
    """The README's main command, on the real default model and data, at a reduced size."""
    rc = main(["demo", "--max-train-examples", "48", "--max-eval-examples", "24", "--epochs", "2",
               "--batch-size", "8", "--lookahead", "1", "--max-length", "24", "--out", str(tmp_path),
               "--no-progress", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    for word in ("dense", "omp", "isp", "majority class", "tickets:"):
        assert word in out
    assert (tmp_path / "plots" / "accuracy_vs_sparsity.png").exists()
    from safetensors.numpy import load_file

    (isp_run,) = tmp_path.glob("isp-*")
    masks = load_file(str(isp_run / "ticket" / "masks.safetensors"))
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    assert 1 - kept / total == pytest.approx(0.7, abs=1.0 / total)
