"""Your own data and labels: label names into the export, split files, eval --file, label-id checks,
head-size refusals (issue 14; issue 10 cases 3 and 7)."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import build_tiny_bert, subprocess_env
from instantsoup.cli import main
from instantsoup.data import DataError, load_table
from test_cli import write_table

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("rotten", "fresh")


def write_named(path, n=80, seed=0, names=NAMES, only=None):
    """test_cli's learnable table with text labels (names[1] iff more tokens >= w20) in columns
    review/verdict; ``only``: every row gets names[only]."""
    write_table(path, n, seed)
    rows = list(csv.reader(open(path, newline="")))[1:]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "verdict"])
        w.writerows([text, names[int(y) if only is None else only]] for text, y in rows)
    return path


def write_ids(path, labels):
    path.write_text("sentence,label\n" + "".join(f"w{i % 30} w{(3 * i) % 30},{y}\n" for i, y in enumerate(labels)))
    return path


COLS = ["--text-column", "review", "--label-column", "verdict"]


def runs_in(out):
    """The run directories under --out (not the lock or cache files kept beside them)."""
    return [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]


# ---- issue 10, case 3: class count from the set of labels --------------------------------------
@pytest.mark.parametrize("labels, line, hint", [
    ([0, 1, 0, 5, 1], 5, "ids must be 0..2 with no gaps"),          # a gap: 3 labels, 5 is no id
    ([1, 2, 2, 1], 3, "1-based ids?"),                               # 1-based: 2 is outside [0, 2)
    ([0, 1, 1000000000, 0], 4, "ids must be 0..2"),                  # one stray huge id: no 24 GB head
])
def test_integer_label_ids_must_be_0_to_k_minus_1(tmp_path, labels, line, hint):
    p = write_ids(tmp_path / "d.csv", labels)
    with pytest.raises(DataError, match=rf"d\.csv:{line}: label \d+ in column 'label' is not a class id") as e:
        load_table(p, "sentence", "label")
    assert hint in str(e.value) and "--num-labels" in str(e.value)


def test_num_labels_allows_absent_classes_and_is_bounded(tmp_path):
    p = write_ids(tmp_path / "d.csv", [0, 1, 0, 5, 1])
    ds = load_table(p, "sentence", "label", num_labels=6)
    assert ds.num_labels == 6 and ds.label_names == [str(i) for i in range(6)]
    np.testing.assert_array_equal(ds.labels, [0, 1, 0, 5, 1])
    with pytest.raises(DataError, match=r"d\.csv:5: unknown label '5'"):
        load_table(p, "sentence", "label", num_labels=3)
    with pytest.raises(ValueError, match=r"num_labels must be an integer in \[2, 100000\], got 1000000000"):
        load_table(p, "sentence", "label", num_labels=10**9)
    many = tmp_path / "many.csv"
    many.write_text("sentence,label\n" + "".join(f"w1,name{i}\n" for i in range(1001)))
    with pytest.raises(DataError, match=r"1001 distinct labels, more than 1000; is it the right column"):
        load_table(many, "sentence", "label")


def test_cli_stray_label_is_one_error_line_naming_file_and_line(tiny_bert_dir, tmp_path, capsys):
    p = write_ids(tmp_path / "d.csv", [0, 1] * 20 + [1000000000] + [0, 1] * 5)
    rc = main(["prune", "--method", "omp", "--model", str(tiny_bert_dir), "--task", str(p), "--no-progress",
               "--out", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(f"instantsoup prune: error: {p}:42: label 1000000000") and err.count("\n") == 1
    rc = main(["prune", "--method", "omp", "--model", str(tiny_bert_dir), "--task", str(p), "--num-labels",
               "1000000000", "--out", str(tmp_path / "runs")])
    assert rc == 2 and "num_labels must be an integer in [2, 100000]" in capsys.readouterr().err


# ---- label names: data -> ticket -> config.json -> a plain transformers script ----------------------
TRANSFORMERS_EVAL = r'''
import csv, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ckpt, path = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(ckpt)
model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
rows = list(csv.DictReader(open(path)))
y = torch.tensor([model.config.label2id[r["verdict"]] for r in rows])
enc = tok([r["review"] for r in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
with torch.no_grad():
    pred = model(**enc).logits.argmax(-1)
print(f"n={len(rows)} accuracy={(pred == y).float().mean().item():.6f} "
      f"first={model.config.id2label[int(pred[0])]}")
'''


def test_label_names_reach_the_export_and_a_transformers_only_eval_script(tiny_bert_dir, tmp_path, capsys):
    train = write_named(tmp_path / "train.csv", n=120)
    test = write_named(tmp_path / "test.csv", n=40, seed=1)
    rc = main(["prune", "--method", "omp", "--sparsity", "0.5", "--model", str(tiny_bert_dir), "--train-file",
               str(train), "--test-file", str(test), *COLS, "--epochs", "2", "--batch-size", "16", "--lr", "1e-3",
               "--max-length", "32", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    (run,) = runs_in(tmp_path / "runs")
    ck = run / "ticket" / "checkpoint"
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["id2label"] == {"0": "fresh", "1": "rotten"} and cfg["label2id"] == {"fresh": 0, "rotten": 1}
    assert json.loads((run / "ticket" / "metrics.json").read_text())["label_names"] == ["fresh", "rotten"]
    script = tmp_path / "hf_eval.py"
    script.write_text(TRANSFORMERS_EVAL)
    r = subprocess.run([sys.executable, str(script), str(ck), str(test)], capture_output=True, text=True,
                       env=subprocess_env())
    assert r.returncode == 0, r.stderr
    hf = dict(kv.split("=") for kv in r.stdout.split())
    # our eval of the same file agrees (labels mapped through the checkpoint's label2id)
    assert main(["eval", str(ck), "--file", str(test), *COLS, "--max-length", "32"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours["n"] == int(hf["n"]) == 40
    assert ours["accuracy"] == pytest.approx(float(hf["accuracy"]), abs=1e-6)
    assert ours["label_names"] == ["fresh", "rotten"] and set(ours["per_label"]) == {"fresh", "rotten"}
    assert sum(v["n"] for v in ours["per_label"].values()) == 40


# ---- eval --file and label mapping ----------------------------------------------------------------
def test_eval_file_scores_the_whole_file_and_refuses_unknown_labels(tiny_bert_dir, tmp_path, capsys):
    p = write_ids(tmp_path / "all.csv", [0, 1] * 25)
    assert main(["eval", str(tiny_bert_dir), "--file", str(p)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 50 and 0 <= res["accuracy"] <= 1 and res["label_names"] == ["LABEL_0", "LABEL_1"]
    # a single-class file works: ids in range of the checkpoint's head
    one = write_ids(tmp_path / "one.csv", [1] * 7)
    assert main(["eval", str(tiny_bert_dir), "--file", str(one)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 7 and res["per_label"]["LABEL_0"] == {"n": 0, "accuracy": None}
    # labels the checkpoint does not know: one error line naming file and line
    named = write_named(tmp_path / "named.csv", n=5)
    assert main(["eval", str(tiny_bert_dir), "--file", str(named), *COLS]) == 2
    err = capsys.readouterr().err
    assert f"instantsoup eval: error: {named}:2: unknown label" in err and "LABEL_0" in err
    bad = write_ids(tmp_path / "bad.csv", [0, 1, 2])
    assert main(["eval", str(tiny_bert_dir), "--file", str(bad)]) == 2
    assert f"{bad}:4: unknown label '2'" in capsys.readouterr().err


def test_eval_task_prints_split_sizes(tiny_bert_dir, tmp_path, capsys):
    p = write_ids(tmp_path / "d.csv", [0, 1] * 30)
    assert main(["eval", str(tiny_bert_dir), "--task", str(p)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_n"] == 6 and res["validation_n"] == 5 and "test_accuracy" in res


# ---- issue 10, case 7: a head that does not fit the task ------------------------------------------
def write_sst2(d):
    d.mkdir()
    for name, n in (("train.tsv", 30), ("dev.tsv", 10)):
        (d / name).write_text("sentence\tlabel\n" + "".join(f"w{i} w{i + 1}\t{i % 2}\n" for i in range(n)))
    return d


def test_eval_refuses_a_head_of_another_size_unless_reinit_head(tmp_path, capsys, caplog):
    three = tmp_path / "three"
    three.mkdir()
    build_tiny_bert(three, num_labels=3)
    sst2 = write_sst2(tmp_path / "SST-2")
    rc = main(["eval", str(three), "--task", "sst2", "--data-dir", str(sst2)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "instantsoup eval: error: the checkpoint's head has 3 labels" in err and "'sst2' has 2" in err
    assert main(["eval", str(three), "--task", "sst2", "--data-dir", str(sst2), "--reinit-head"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_n"] == 10 and res["label_names"] == ["negative", "positive"]
    # a 2-class head with other names scores by id, and says so
    named = tmp_path / "named2"
    named.mkdir()
    build_tiny_bert(named)
    cfg = json.loads((named / "config.json").read_text())
    cfg.update(id2label={"0": "rotten", "1": "fresh"}, label2id={"rotten": 0, "fresh": 1})
    (named / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING"):
        assert main(["eval", str(named), "--task", "sst2", "--data-dir", str(sst2)]) == 0
    assert "scoring by id (rotten = negative, fresh = positive)" in caplog.text
    capsys.readouterr()
    # a table's labels are mapped through the 3-class head's names: ids 0/1 are fine, a text label is not
    ids = write_ids(tmp_path / "ids.csv", [0, 1] * 10)
    assert main(["eval", str(three), "--file", str(ids)]) == 0
    assert json.loads(capsys.readouterr().out)["label_names"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    named = write_named(tmp_path / "named.csv", n=6)
    assert main(["eval", str(three), "--file", str(named), *COLS]) == 2
    assert "unknown label" in capsys.readouterr().err
    assert main(["eval", str(three), "--file", str(named), *COLS, "--reinit-head"]) == 0
    assert json.loads(capsys.readouterr().out)["label_names"] == ["fresh", "rotten"]


# ---- split files and the Python API ---------------------------------------------------------------
def test_split_files_keep_their_rows_and_share_label_ids(tiny_bert_dir, tmp_path):
    from instantsoup.task import load_task

    tr = write_named(tmp_path / "tr.csv", n=50)
    va = write_named(tmp_path / "va.csv", n=12, seed=2)
    te = write_named(tmp_path / "te.csv", n=9, seed=3, only=0)   # single-class test file: all "rotten"
    kw = dict(text_column="review", label_column="verdict")
    task = load_task(str(tr), tiny_bert_dir, 32, validation_file=str(va), test_file=str(te), **kw)
    assert (len(task.train), len(task.validation), len(task.test)) == (50, 12, 9)
    assert task.label_names == ["fresh", "rotten"] and np.all(task.test.labels == 1)
    assert task.metric(task.test.labels, task.test.labels)["accuracy"] == 1.0
    # an omitted split is held out of train, as for a single table
    task = load_task("default", tiny_bert_dir, 32, train_file=str(tr), test_file=str(te), **kw)
    assert (len(task.train), len(task.validation), len(task.test)) == (45, 5, 9)
    # a test label that train does not have
    odd = tmp_path / "odd.csv"
    odd.write_text("review,verdict\nw1 w2,fresh\nw3,meh\n")
    with pytest.raises(DataError, match=r"odd\.csv:3: unknown label 'meh'"):
        load_task(str(tr), tiny_bert_dir, 32, test_file=str(odd), **kw)
    # a single-class training file is refused with a message
    with pytest.raises(ValueError, match=r"training data has 1 class\(es\) \['rotten'\]; a classifier needs"):
        load_task(str(te), tiny_bert_dir, 32, **kw)


def test_task_from_tables_python_api(tiny_bert_dir, tmp_path):
    import instantsoup as isp
    from instantsoup import data as D
    from instantsoup.task import metric_for

    tr = load_table(write_named(tmp_path / "tr.csv", n=40), "review", "verdict")
    te = write_named(tmp_path / "te.csv", n=10, seed=5)
    tok = D.Tokenizer.from_pretrained(tiny_bert_dir)
    task = isp.TaskData.from_tables(tr, test=te, tokenizer=tok, text_column="review", label_column="verdict",
                                    label_names=["rotten", "fresh"], max_length=32, name="mine")
    assert task.name == "mine" and task.label_names == ["rotten", "fresh"] and len(task.test) == 10
    raw = load_table(te, "review", "verdict", label_names=["rotten", "fresh"])
    np.testing.assert_array_equal(task.test.labels, raw.labels)
    assert metric_for(["accuracy", "f1"])(np.array([1, 0]), np.array([1, 1])) == {"accuracy": 0.5,
                                                                                  "f1": pytest.approx(2 / 3)}
    model = isp.load_model(tiny_bert_dir, num_labels=task.num_labels)
    settings = isp.Settings(train=isp.TrainSettings(batch_size=8, epochs=1, max_length=32),
                            prune=isp.PruneSettings(method="omp", sparsity=0.3))
    ticket = isp.methods.one_shot(model, task, settings, progress=False)
    assert ticket.label_names == ["rotten", "fresh"] and "test_accuracy" in ticket.metrics


# ---- Hugging Face datasets: objects, save_to_disk folders, Parquet exports (built in memory) -------
def hf_data(n, seed, names=("rotten", "fresh")):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        toks = rng.integers(0, 40, size=int(rng.integers(3, 9)))
        texts.append(" ".join(f"w{t}" for t in toks))
        labels.append(int((toks >= 20).sum() * 2 > len(toks)))
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=feats)


def test_datasets_objects_are_tables_and_classlabel_names_are_kept(tiny_bert_dir):
    datasets = pytest.importorskip("datasets")
    from instantsoup import TaskData

    ds = hf_data(30, 0)
    t = load_table(ds, "text", "label")
    assert t.label_names == ["rotten", "fresh"] and t.labels.tolist() == list(ds["label"]) and len(t) == 30
    dd = datasets.DatasetDict({"train": hf_data(40, 1), "validation": hf_data(10, 2), "test": hf_data(12, 3)})
    task = TaskData.from_tables(dd, tokenizer=tiny_bert_dir, text_column="text", max_length=32)
    assert (len(task.train), len(task.validation), len(task.test)) == (40, 10, 12)
    assert task.label_names == ["rotten", "fresh"]
    np.testing.assert_array_equal(task.test.labels, dd["test"]["label"])
    # an explicit test Dataset wins over the dict's; a Dataset with -1 ("no label") is refused
    task = TaskData.from_tables(dd["train"], test=dd["test"], tokenizer=tiny_bert_dir, text_column="text")
    assert (len(task.train), len(task.validation), len(task.test)) == (36, 4, 12)
    unl = hf_data(3, 4).map(lambda ex: {"label": -1})
    with pytest.raises(DataError, match=r"<datasets.Dataset>: row 0: missing label"):
        load_table(unl, "text", "label")
    with pytest.raises(DataError, match=r"missing column\(s\) \['sentence'\]"):
        load_table(ds, "sentence", "label")


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_cli_prunes_a_dataset_folder_and_exports_its_classlabel_names(tiny_bert_dir, tmp_path, capsys, layout):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": hf_data(60, 1), "test": hf_data(16, 3)})
    folder = tmp_path / "data"
    if layout == "save_to_disk":
        dd.save_to_disk(str(folder))
    else:  # the layout of the hub's Parquet exports
        (folder / "data").mkdir(parents=True)
        for split, d in dd.items():
            d.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    rc = main(["prune", "--method", "omp", "--sparsity", "0.3", "--model", str(tiny_bert_dir), "--task", str(folder),
               "--text-column", "text", "--epochs", "1", "--batch-size", "16", "--max-length", "32",
               "--out", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    (run,) = runs_in(tmp_path / "runs")
    cfg = json.loads((run / "ticket" / "checkpoint" / "config.json").read_text())
    assert cfg["label2id"] == {"rotten": 0, "fresh": 1}
    capsys.readouterr()
    assert main(["eval", str(run / "ticket" / "checkpoint"), "--task", str(folder), "--text-column", "text",
                 "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["test_n"] == 16


# ---- inference and continuation -------------------------------------------------------------------
def test_model_call_and_predict_match_transformers(tiny_bert_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import instantsoup as isp
    from instantsoup import data as D

    texts = ["w1 w2 w3", "w30 w31", "w5 w6 w7 w8 w9 w10", "w4"]
    hf_tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    hf = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_dir)).eval()
    model = isp.load_model(tiny_bert_dir).eval()
    enc = hf_tok(texts[:3], padding=True, return_tensors="np")
    y = np.array([1, 0, 1])
    out = model(**enc, labels=y)
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in enc.items()}, labels=torch.tensor(y))
    assert isinstance(out.logits, np.ndarray) and out.logits.shape == (3, 2)
    np.testing.assert_allclose(out.logits, ref.logits.numpy(), rtol=1e-4, atol=1e-5)
    assert out.loss == pytest.approx(float(ref.loss), rel=1e-5) and model(**enc).loss is None
    assert out["logits"] is out.logits
    with pytest.raises(TypeError, match="unexpected model inputs \\['position_ids'\\]"):
        model(input_ids=enc["input_ids"], position_ids=enc["input_ids"])
    # predict: our tokenizer, a transformers tokenizer, or the model's own directory agree
    ours = model.predict(texts, D.Tokenizer.from_pretrained(tiny_bert_dir), batch_size=2)
    theirs = model.predict(texts, hf_tok, batch_size=3)
    default = model.predict(texts)
    np.testing.assert_allclose(ours.logits, theirs.logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours.ids, default.ids)
    pairs = model.predict([("w1 w2", "w3 w4"), ("w5", "w6 w7")], hf_tok)
    with torch.no_grad():
        one = hf(**hf_tok("w1 w2", "w3 w4", return_tensors="pt")).logits.numpy()[0]
    np.testing.assert_allclose(pairs.logits[0], one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict([("w1 w2", "w3 w4"), ("w5", "w6 w7")]).logits, pairs.logits,
                               rtol=1e-4, atol=1e-5)
    assert ours.labels == [model.label_names[i] for i in ours.ids] and model.label_names == ["LABEL_0", "LABEL_1"]
    assert not model.training


def test_load_ticket_keeps_masks_through_further_training(tiny_bert_dir, tmp_path):
    import instantsoup as isp
    from instantsoup.task import load_task

    train = write_named(tmp_path / "tr.csv", n=64)
    task = load_task(str(train), tiny_bert_dir, 32, text_column="review", label_column="verdict")
    settings = isp.Settings(train=isp.TrainSettings(batch_size=16, epochs=1, max_length=32),
                            prune=isp.PruneSettings(method="omp", sparsity=0.6))
    ticket = isp.methods.one_shot(isp.load_model(tiny_bert_dir, num_labels=2), task, settings,
                                  run_dir=tmp_path / "run", progress=False)
    model = isp.load_ticket(tmp_path / "run")                      # a run directory or its ticket/
    assert model.label_names == ["fresh", "rotten"]
    for k, m in ticket.masks.items():
        np.testing.assert_array_equal(model.masks[k], np.asarray(m))
    plain = isp.load_model(tmp_path / "run" / "ticket" / "checkpoint")
    assert all(np.all(m == 1) for m in plain.masks.values())       # a checkpoint alone has no masks
    batch, labels = task.train.collate(np.arange(16), task.pad_id)
    for m in (model, plain):
        opt = isp.AdamW(m, lr=1e-2)
        m.train()
        for _ in range(3):
            opt.train_step(batch, labels)
    for k, mask in ticket.masks.items():
        pruned = np.asarray(mask) == 0
        assert np.all(model.state_dict()[k][pruned] == 0), k               # stay exactly zero
        assert np.any(model.state_dict()[k][~pruned] != ticket.weights[k][~pruned]), k
    assert any(np.any(plain.state_dict()[k][np.asarray(m) == 0] != 0) for k, m in ticket.masks.items())
    with pytest.raises(FileNotFoundError, match="not a ticket directory"):
        isp.load_ticket(tmp_path)


# ---- config files, aliases, --help choices --------------------------------------------------------
def test_config_round_trip_of_a_runs_settings_json(tiny_bert_dir, tmp_path, capsys):
    table = write_named(tmp_path / "t.csv", n=60)
    argv = ["prune", "--method", "omp", "--sparsity", "0.5", "--model", str(tiny_bert_dir), "--task", str(table),
            *COLS, "--num-train-epochs", "1", "--per-device-train-batch-size", "16", "--learning-rate", "1e-3",
            "--max-length", "32", "--output-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    (run,) = runs_in(tmp_path / "runs")
    saved = json.loads((run / "settings.json").read_text())["settings"]
    assert saved["train"]["lr"] == 1e-3 and saved["train"]["epochs"] == 1 and saved["train"]["batch_size"] == 16
    assert saved["run"]["out"] == str(tmp_path / "runs")
    # the settings.json of a run is a config: it resolves to the same settings ...
    assert main(["prune", "--config", str(run / "settings.json"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == saved
    # ... and names the same run (finished: nothing is redone)
    mtime = (run / "ticket" / "ticket.json").stat().st_mtime_ns
    assert main(["prune", "--config", str(run / "settings.json")]) == 0
    assert (run / "ticket" / "ticket.json").stat().st_mtime_ns == mtime and len(runs_in(tmp_path / "runs")) == 1
    capsys.readouterr()
    # flags on the command line override the file; TOML sections work the same
    assert main(["prune", "--config", str(run / "settings.json"), "--sparsity", "0.4", "--print-config"]) == 0
    over = json.loads(capsys.readouterr().out)
    assert over["prune"]["sparsity"] == 0.4 and over["train"]["lr"] == 1e-3
    toml = tmp_path / "run.toml"
    toml.write_text('[prune]\nmethod = "gmp"\nsparsity = 0.3\n[train]\nlr = 5e-4\nepochs = 2\n')
    assert main(["prune", "--config", str(toml), "--lr", "1e-4", "--print-config"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["prune"]["method"], res["prune"]["sparsity"], res["train"]["lr"], res["train"]["epochs"]) == \
        ("gmp", 0.3, 1e-4, 2)
    for text, msg in (('[train]\nlr_rate = 1\n', "unknown train setting(s) lr_rate"),
                      ('[train]\nepochs = "3"\n', "TrainSettings.epochs: expected float, got str"),
                      ('[prune]\nsparsity = \n', "config file")):
        toml.write_text(text)
        assert main(["prune", "--config", str(toml), "--print-config"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("instantsoup prune: error: ") and msg in err, err


def test_help_lists_choices_and_trainer_aliases(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    assert "{isp,imp,omp,gmp,random,dense,ims}" in out and "{union,intersection,vote}" in out
    assert "STR}" not in out and "--method STR" not in out
    for alias in ("--learning-rate", "--num-train-epochs", "--per-device-train-batch-size", "--output-dir",
                  "--config", "--print-config", "--train-file", "--num-labels"):
        assert alias in out


# ---- logs ------------------------------------------------------------------------------------------
def test_history_has_training_loss_lr_and_throughput(make_model, tmp_path):
    import dataclasses

    from conftest import make_tiny_task
    from instantsoup import runs
    from instantsoup.methods import METHODS
    from test_methods import settings

    s = settings("dense")
    s = dataclasses.replace(s, train=dataclasses.replace(s.train, eval_every=4))
    METHODS["dense"](make_model(), make_tiny_task(vocab=60), s, run_dir=tmp_path / "run", progress=False)
    hist = runs.read_history(tmp_path / "run")
    train = [h for h in hist if h["event"] == "train"]
    evals = [h for h in hist if h["event"] == "eval"]
    assert [h["step"] for h in train] == [h["step"] for h in evals] == list(range(4, 18, 4)) + [18]
    assert sum(h["steps"] for h in train) == 18
    for h in train:
        assert np.isfinite(h["loss"]) and h["lr"] > 0 and h["steps_per_second"] > 0 and h["examples_per_second"] > 0


def test_tensorboard_scalars_when_installed(make_model, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import make_tiny_task
    from instantsoup import runs
    from instantsoup.methods import METHODS
    from test_methods import settings

    METHODS["dense"](make_model(), make_tiny_task(vocab=60), settings("dense"), run_dir=tmp_path / "run",
                     progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    train = [h for h in runs.read_history(tmp_path / "run") if h["event"] == "train"]
    loss = acc.Scalars("finetune/train_loss")
    assert [e.step for e in loss] == [h["step"] for h in train]
    np.testing.assert_allclose([e.value for e in loss], [h["loss"] for h in train], rtol=1e-6)
    assert {"finetune/lr", "finetune/examples_per_second", "finetune/val_accuracy"} <= set(acc.Tags()["scalars"])


def test_eval_file_on_a_regression_checkpoint(tmp_path, capsys):
    reg = tmp_path / "reg"
    reg.mkdir()
    build_tiny_bert(reg, num_labels=1)
    p = tmp_path / "scores.csv"
    p.write_text("sentence,label\n" + "".join(f"w{i} w{i + 2},{i / 10}\n" for i in range(12)))
    assert main(["eval", str(reg), "--file", str(p)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 12 and {"pearson", "spearmanr"} <= set(res) and "label_names" not in res


def test_a_save_to_disk_folder_without_datasets_is_one_error_line(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": hf_data(20, 1)}).save_to_disk(str(tmp_path / "saved"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    capsys.readouterr()
    rc = main(["prune", "--method", "omp", "--model", str(tiny_bert_dir), "--task", str(tmp_path / "saved"),
               "--text-column", "text", "--out", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(f"instantsoup prune: error: {tmp_path / 'saved'}: a Hugging Face datasets folder")
    assert "pip install 'instantsoup[datasets]'" in err and err.count("\n") == 1
