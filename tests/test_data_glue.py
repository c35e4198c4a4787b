"""GLUE loaders on small generated files in each task's real layout (TSV and HF Parquet), and the
NumPy metrics against scikit-learn / SciPy."""
import numpy as np
import pytest

from instantsoup.data import DataError, load_glue
from instantsoup.data import metrics as M
from instantsoup.data.glue import GLUE_TASKS

# --------------------------------------------------------------------------- generated GLUE files
# (text_a, text_b, label as written in GLUE's TSV, label id as HF datasets stores it)
ROWS = {
    "cola": [("Our friends won't buy this analysis, let alone the next one we propose.", None, "1", 1),
             ("They drank the pub.", None, "0", 0),
             ('The "quoted" word, unbalanced " quote.', None, "1", 1)],
    "sst2": [("hide new secretions from the parental units ", None, "0", 0),
             ("that loves its characters and communicates something rather beautiful about human nature ",
              None, "1", 1),
             ('the " film " is " great', None, "1", 1)],
    "mrpc": [('Amrozi accused his brother , whom he called " the witness " , of deliberately distorting '
              'his evidence .', 'Referring to him as only " the witness " , Amrozi accused his brother of '
              'deliberately distorting his evidence .', "1", 1),
             ("Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
              "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 "
              "billion in 1998 .", "0", 0)],
    "qqp": [("How is the life of a math student? Could you describe your own experiences?",
             "Which level of prepration is enough for the exam jlpt5?", "0", 0),
            ('What does "it" mean?', 'What is the meaning of "it"?', "1", 1)],
    "stsb": [("A plane is taking off.", "An air plane is taking off.", "5.000", 5.0),
             ("A man is playing a large flute.", "A man is playing a flute.", "3.800", 3.8),
             ('A "man" is slicing.', "Nobody slices.", "0.250", 0.25)],
    "mnli": [("Conceptually cream skimming has two basic dimensions - product and geography.",
              "Product and geography are what make cream skimming work. ", "neutral", 1),
             ("you know during the season and i guess at at your level uh you lose them",
              "You lose the things to the following level if the people recall.", "entailment", 0),
             ('One of our number will carry out your "instructions" minutely.',
              "A member of my team will execute your orders with immense precision.", "contradiction", 2)],
    "qnli": [("When did the third Digimon series begin?",
              "Unlike the two seasons before it and most of the seasons that followed, Digimon Tamers "
              "takes a darker and more realistic approach.", "not_entailment", 1),
             ("Which missile batteries often have individual launchers several kilometres from one another?",
              "When MANPADS is operated by specialists, batteries may have several dozen teams.",
              "entailment", 0)],
    "rte": [("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
             "not_entailment", 1),
            ("A place of sorrow, after Pope John Paul II died, became a place of celebration.",
             "Pope John Paul II died.", "entailment", 0)],
    "wnli": [("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
              "The carrot had a hole.", "1", 1),
             ("John couldn't see the stage with Billy in front of him because he is so short.",
              "John is so short.", "0", 0)],
}


def _tsv(path, header, rows):
    lines = ([("\t".join(header))] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glue_tsv(root, task):
    """Write train/dev/test TSVs of ``task`` under root/<GLUE dir name>/ in GLUE's layout."""
    t = GLUE_TASKS[task]
    d = root / t.dirname
    d.mkdir(parents=True, exist_ok=True)
    rows = ROWS[task]
    dev_names = ["dev_matched", "dev_mismatched"] if task == "mnli" else ["dev"]
    test_names = ["test_matched", "test_mismatched"] if task == "mnli" else ["test"]
    for split in ["train"] + dev_names + test_names:
        test = split.startswith("test")
        if task == "cola":
            if test:
                _tsv(d / f"{split}.tsv", ["index", "sentence"], [(str(i), a) for i, (a, *_r) in enumerate(rows)])
            else:   # no header row; source, label, original annotation, sentence
                _tsv(d / f"{split}.tsv", None,
                     [("gj04", lab, "" if lab == "1" else "*", a) for a, _, lab, _ in rows])
        elif task == "sst2":
            if test:
                _tsv(d / f"{split}.tsv", ["index", "sentence"], [(str(i), a) for i, (a, *_r) in enumerate(rows)])
            else:
                _tsv(d / f"{split}.tsv", ["sentence", "label"], [(a, lab) for a, _, lab, _ in rows])
        elif task == "mrpc":
            first = "index" if test else "\ufeffQuality"      # the train file starts with a BOM
            _tsv(d / f"{split}.tsv", [first, "#1 ID", "#2 ID", "#1 String", "#2 String"],
                 [((str(i) if test else lab), str(1000 + i), str(2000 + i), a, b)
                  for i, (a, b, lab, _) in enumerate(rows)])
        elif task == "qqp":
            if test:
                _tsv(d / f"{split}.tsv", ["id", "question1", "question2"],
                     [(str(i), a, b) for i, (a, b, *_r) in enumerate(rows)])
            else:
                body = [(str(i), str(2 * i), str(2 * i + 1), a, b, lab) for i, (a, b, lab, _) in enumerate(rows)]
                body.insert(1, ("999", "1", "2", "a question cut by a stray newline"))   # malformed row
                _tsv(d / f"{split}.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], body)
        elif task == "stsb":
            head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
            _tsv(d / f"{split}.tsv", head + ([] if test else ["score"]),
                 [(str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b)
                  + (() if test else (lab,)) for i, (a, b, lab, _) in enumerate(rows)])
        elif task == "mnli":
            head = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
            if split == "train":
                head_l = head + ["label1", "gold_label"]
            elif test:
                head_l = head
            else:
                head_l = head + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
            body = []
            for i, (a, b, lab, _) in enumerate(rows):
                r = [str(i), "31193", f"{i}n", "government", "( ( " + a + " ) )", "( " + b + " )",
                     "(ROOT (S ...))", "(ROOT (S ...))", a, b]
                r += {len(head): [], len(head) + 2: [lab, lab], len(head) + 6: [lab] * 6}[len(head_l)]
                body.append(r)
            _tsv(d / f"{split}.tsv", head_l, body)
        else:   # qnli, rte, wnli
            cols = ["index", "question", "sentence"] if task == "qnli" else ["index", "sentence1", "sentence2"]
            _tsv(d / f"{split}.tsv", cols + ([] if test else ["label"]),
                 [(str(i), a, b) + (() if test else (lab,)) for i, (a, b, lab, _) in enumerate(rows)])
    return d


def write_glue_parquet(root, task):
    """HF datasets' layout: root/<task>/<split>-00000-of-00001.parquet with HF column names."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = GLUE_TASKS[task]
    d = root / t.name
    d.mkdir(parents=True, exist_ok=True)
    rows = ROWS[task]
    splits = (["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
              if task == "mnli" else ["train", "validation", "test"])
    for split in splits:
        cols = {t.hf_text[0]: [r[0] for r in rows]}
        if t.is_pair:
            cols[t.hf_text[1]] = [r[1] for r in rows]
        if t.is_regression:
            cols["label"] = pa.array([(-1.0 if split.startswith("test") else r[3]) for r in rows], pa.float32())
        else:
            cols["label"] = pa.array([(-1 if split.startswith("test") else r[3]) for r in rows], pa.int64())
        cols["idx"] = pa.array(list(range(len(rows))), pa.int32())
        pq.write_table(pa.table(cols), d / f"{split}-00000-of-00001.parquet")
    return d


def expected(task):
    rows = ROWS[task]
    texts = [r[0] if r[1] is None else (r[0], r[1]) for r in rows]
    return texts, np.array([r[3] for r in rows])


@pytest.mark.parametrize("task", sorted(ROWS))
def test_glue_tsv_layouts(tmp_path, task):
    write_glue_tsv(tmp_path, task)
    texts, labels = expected(task)
    t = GLUE_TASKS[task]
    dev_splits = ["validation_matched", "validation_mismatched"] if task == "mnli" else ["validation", "dev"]
    for split in ["train"] + dev_splits:
        ds = load_glue(task, tmp_path, split)         # parent directory: finds <GLUE dir name>/
        assert ds.texts == texts
        assert ds.labels.dtype == (np.float32 if t.is_regression else np.int64)
        np.testing.assert_allclose(ds.labels, labels)
        assert ds.label_names == list(t.label_names)
        assert ds.is_regression == t.is_regression
        assert ds.info["format"] == "tsv"
    test_splits = ["test_matched", "test_mismatched"] if task == "mnli" else ["test"]
    for split in test_splits:
        ds = load_glue(task, tmp_path / t.dirname, split)    # the task directory itself
        assert ds.texts == texts and ds.labels is None and not ds.has_labels
        with pytest.raises(ValueError, match="no labels"):
            ds.metric(np.zeros(len(ds)))


@pytest.mark.parametrize("task", sorted(ROWS))
def test_glue_parquet_equals_tsv(tmp_path, task):
    write_glue_tsv(tmp_path / "glue_data", task)
    write_glue_parquet(tmp_path / "glue", task)
    splits = ["train", "validation_matched", "validation_mismatched"] if task == "mnli" else ["train", "validation"]
    for split in splits:
        a = load_glue(task, tmp_path / "glue_data", split)
        b = load_glue(task.upper(), tmp_path / "glue", split)
        assert b.info["format"] == "parquet"
        assert a.texts == b.texts and a.label_names == b.label_names
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.task == b.task
    test = "test_matched" if task == "mnli" else "test"
    assert load_glue(task, tmp_path / "glue", test).labels is None


def test_glue_names_and_splits(tmp_path):
    write_glue_tsv(tmp_path, "mnli")
    write_glue_tsv(tmp_path, "sst2")
    assert load_glue("SST-2", tmp_path, "dev").task == "sst2"
    assert load_glue("mnli", tmp_path, "validation").info["split"] == "validation_matched"
    mm = load_glue("mnli-mm", tmp_path, "dev")
    assert mm.info["split"] == "validation_mismatched" and mm.task == "mnli-mm"
    with pytest.raises(ValueError, match="unknown GLUE task"):
        load_glue("squad", tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_glue("sst2", tmp_path, "validation_matched")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        load_glue("rte", tmp_path, "dev")


def test_qqp_malformed_rows_skipped(tmp_path, caplog):
    write_glue_tsv(tmp_path, "qqp")
    with caplog.at_level("WARNING"):
        ds = load_glue("qqp", tmp_path, "train")
    assert len(ds) == len(ROWS["qqp"]) and ds.info["skipped_rows"] == 1
    assert "skipped 1 malformed row" in caplog.text


def test_glue_bad_rows_name_file_and_line(tmp_path):
    d = write_glue_tsv(tmp_path, "rte")
    path = d / "train.tsv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tmaybe"          # unknown label on line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: unknown label 'maybe'") as e:
        load_glue("rte", tmp_path, "train")
    assert e.value.line == 3 and e.value.path == str(path)
    lines[2] = "0\tonly two fields"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 4 tab-separated fields"):
        load_glue("rte", tmp_path, "train")
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\n")
    with pytest.raises(DataError, match="no data rows"):
        load_glue("rte", tmp_path, "dev")
    (d / "dev.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(DataError, match=r"dev\.tsv:1: missing column\(s\) \['sentence2'\]"):
        load_glue("rte", tmp_path, "dev")
    sts = write_glue_tsv(tmp_path, "stsb")
    (sts / "dev.tsv").write_bytes((sts / "dev.tsv").read_bytes().replace(b"flute.\t", b"fl\xfbte.\t"))
    with pytest.raises(DataError, match=r"dev\.tsv:3: invalid UTF-8 byte 0xfb"):
        load_glue("stsb", tmp_path, "dev")


# --------------------------------------------------------------------------- metrics
try:
    import scipy.stats as scipy_stats
    import sklearn.metrics as sklearn_metrics
except ImportError:  # pragma: no cover - the test extra has both
    scipy_stats = sklearn_metrics = None
needs_refs = pytest.mark.skipif(sklearn_metrics is None, reason="needs scikit-learn and scipy")


@needs_refs
@pytest.mark.parametrize("trial", range(5))
def test_metrics_match_sklearn_scipy(trial):
    rng = np.random.default_rng(trial)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    p = rng.integers(0, 2, n)
    assert M.accuracy(p, y) == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12)
    assert M.f1_score(p, y) == pytest.approx(sklearn_metrics.f1_score(y, p), abs=1e-12)
    assert M.matthews_corrcoef(p, y) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p), abs=1e-12)
    y3, p3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
    assert M.matthews_corrcoef(p3, y3) == pytest.approx(sklearn_metrics.matthews_corrcoef(y3, p3), abs=1e-12)
    s = rng.normal(size=n) * 2 + 2.5
    t = s + rng.normal(size=n)
    assert M.pearson(s, t) == pytest.approx(scipy_stats.pearsonr(s, t)[0], abs=1e-12)
    assert M.spearman(s, t) == pytest.approx(scipy_stats.spearmanr(s, t)[0], abs=1e-12)
    # heavy ties (STS-B gold scores are multiples of 0.2)
    st, tt = np.round(rng.uniform(0, 5, n) * 5) / 5, np.round(rng.uniform(0, 5, n))
    assert M.spearman(st, tt) == pytest.approx(scipy_stats.spearmanr(st, tt)[0], abs=1e-12)
    assert M.pearson(st.astype(np.float32), tt) == pytest.approx(scipy_stats.pearsonr(st, tt)[0], abs=1e-6)


@needs_refs
def test_metric_edge_cases():
    y = np.array([0, 0, 1, 1])
    assert M.f1_score(np.zeros(4, int), np.zeros(4, int)) == 0.0 == sklearn_metrics.f1_score(
        np.zeros(4, int), np.zeros(4, int), zero_division=0)
    assert M.matthews_corrcoef(np.ones(4, int), y) == 0.0
    assert M.matthews_corrcoef(y, y) == 1.0
    with pytest.raises(ValueError):
        M.accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        M.accuracy(np.zeros(0), np.zeros(0))


@needs_refs
@pytest.mark.parametrize("task", sorted(ROWS))
def test_dataset_metric_official_names(tmp_path, task):
    write_glue_tsv(tmp_path, task)
    ds = load_glue(task, tmp_path, "train")
    rng = np.random.default_rng(7)
    if ds.is_regression:
        preds = ds.labels + rng.normal(size=len(ds)).astype(np.float32)
        m = ds.metric(preds[:, None])
        assert set(m) == {"pearson", "spearmanr"}
        assert m["pearson"] == pytest.approx(scipy_stats.pearsonr(preds, ds.labels)[0], abs=1e-6)
    else:
        logits = rng.normal(size=(len(ds), ds.num_labels))
        m = ds.metric(logits)
        ids = logits.argmax(1)
        want = {"cola": {"matthews_correlation"}, "mrpc": {"f1", "accuracy"}, "qqp": {"f1", "accuracy"}}
        assert set(m) == want.get(task, {"accuracy"})
        assert m == ds.metric(ids)
        if "accuracy" in m:
            assert m["accuracy"] == sklearn_metrics.accuracy_score(ds.labels, ids)
        assert ds.metric(ds.labels)[ds.primary_metric] == 1.0
