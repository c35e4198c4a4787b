"""Generic CSV / TSV / JSONL / Parquet loader and its error messages (file and line)."""
import json

import numpy as np
import pytest

from instantsoup.data import DataError, load_table

ROWS = [
    {"text": "a great, moving film", "other": "x", "label": "pos"},
    {"text": 'said "meh", then left', "other": "y", "label": "neg"},
    {"text": "multi\nline text", "other": "z", "label": "pos"},
    {"text": "", "other": "w", "label": "neutral"},
]


def write_csv(path, rows, delimiter=","):
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_agree(tmp_path, fmt):
    writer = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}[fmt]
    path = writer(tmp_path / f"data.{fmt}", ROWS)
    ds = load_table(path, "text", "label")
    assert ds.texts == [r["text"] for r in ROWS]
    assert ds.label_names == ["neg", "neutral", "pos"]           # sorted names -> ids
    np.testing.assert_array_equal(ds.labels, [2, 0, 2, 1])
    assert ds.task == "data" and ds.metric_names == ("accuracy",)
    pairs = load_table(path, "text", "label", text_pair_column="other", label_names=["pos", "neg", "neutral"])
    assert pairs.texts[1] == ('said "meh", then left', "y") and pairs.is_pair
    np.testing.assert_array_equal(pairs.labels, [0, 1, 0, 2])
    unlabeled = load_table(path, "text", None)
    assert unlabeled.labels is None


def test_tsv_integer_and_regression_labels(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text('sentence\tlabel\tscore\nit "works\t1\t0.5\nno\t0\t4\nyes\t2\t1e-1\n', encoding="utf-8")
    ds = load_table(p, "sentence", "label")
    assert ds.texts[0] == 'it "works'                  # TSV: quotes are literal
    np.testing.assert_array_equal(ds.labels, [1, 0, 2])
    assert ds.label_names == ["0", "1", "2"]
    reg = load_table(p, "sentence", "score", regression=True)
    assert reg.is_regression and reg.labels.dtype == np.float32 and reg.num_labels == 1
    np.testing.assert_allclose(reg.labels, [0.5, 4.0, 0.1])
    assert set(reg.metric(reg.labels)) == {"pearson", "spearmanr"}


def test_headerless_by_index(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("neg,bad movie\npos,good movie\n", encoding="utf-8")
    ds = load_table(p, 1, 0, header=False)
    assert ds.texts == ["bad movie", "good movie"] and ds.label_names == ["neg", "pos"]


# --------------------------------------------------------------------------- errors
def test_missing_columns(tmp_path):
    p = write_csv(tmp_path / "d.csv", ROWS)
    with pytest.raises(DataError, match=r"d\.csv:1: missing column\(s\) \['sentence'\]; the file has columns"):
        load_table(p, "sentence", "label")
    j = write_jsonl(tmp_path / "d.jsonl", ROWS[:2] + [{"text": "no label here"}])
    with pytest.raises(DataError, match=r"d\.jsonl:3: missing key\(s\) \['label'\]") as e:
        load_table(j, "text", "label")
    assert e.value.line == 3
    q = write_parquet(tmp_path / "d.parquet", ROWS)
    with pytest.raises(DataError, match=r"d\.parquet: missing column\(s\) \['lbl'\]"):
        load_table(q, "text", "lbl")


def test_unknown_label_names(tmp_path):
    p = write_csv(tmp_path / "d.csv", ROWS)
    with pytest.raises(DataError, match=r"d\.csv:6: unknown label 'neutral' in column 'label'; known labels"):
        load_table(p, "text", "label", label_names=["neg", "pos"])      # line 6: the multi-line row counts 2
    q = write_parquet(tmp_path / "d.parquet", ROWS)
    with pytest.raises(DataError, match=r"d\.parquet: row 3: unknown label 'neutral'"):
        load_table(q, "text", "label", label_names=["neg", "pos"])


def test_empty_files(tmp_path):
    for name in ("e.csv", "e.tsv", "e.jsonl"):
        (tmp_path / name).write_text("")
        with pytest.raises(DataError, match=rf"{name}: the file is empty"):
            load_table(tmp_path / name, "text", "label")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="the file is empty"):
        load_table(tmp_path / "blank.jsonl", "text", "label")
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"h\.csv:1: the file has a header but no data rows"):
        load_table(tmp_path / "h.csv", "text", "label")
    (tmp_path / "e.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty"):
        load_table(tmp_path / "e.parquet", "text", "label")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}),
                   tmp_path / "z.parquet")
    with pytest.raises(DataError, match="no rows"):
        load_table(tmp_path / "z.parquet", "text", "label")


def test_mixed_type_label_column(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("text,label\na,pos\nb,neg\nc,1\nd,pos\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv:4: label column 'label' mixes types: line 2 has 'pos' \(text\) "
                                        r"but this line 4 has '1' \(number\)"):
        load_table(p, "text", "label")
    j = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0},
                                           {"text": "c", "label": "positive"}])
    with pytest.raises(DataError, match=r"m\.jsonl:3: label column 'label' mixes types"):
        load_table(j, "text", "label")
    f = tmp_path / "f.csv"
    f.write_text("text,label\na,1\nb,0.5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"f\.csv:3: label '0\.5' .* regression=True"):
        load_table(f, "text", "label")
    g = tmp_path / "g.csv"
    g.write_text("text,label\na,1\nb,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"g\.csv:3: missing label"):
        load_table(g, "text", "label")
    r = tmp_path / "r.csv"
    r.write_text("text,score\na,1.5\nb,high\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"r\.csv:3: label column 'score' must hold numbers"):
        load_table(r, "text", "score", regression=True)


def test_non_utf8_bytes(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("text,label\ngood,pos\n".encode() + "caf\xe9 au lait,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv:3: invalid UTF-8 byte 0xe9 at column 4") as e:
        load_table(p, "text", "label")
    assert e.value.line == 3
    j = tmp_path / "bad.jsonl"
    j.write_bytes(b'{"text": "ok", "label": 1}\n{"text": "\xff", "label": 0}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid UTF-8 byte 0xff"):
        load_table(j, "text", "label")


def test_other_malformed_input(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("text,label\na,pos\nb,neg,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"w\.csv:3: expected 2 fields"):
        load_table(p, "text", "label")
    j = tmp_path / "j.jsonl"
    j.write_text('{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"j\.jsonl:2: invalid JSON"):
        load_table(j, "text", "label")
    n = write_jsonl(tmp_path / "n.jsonl", [{"text": None, "label": 1}])
    with pytest.raises(DataError, match=r"n\.jsonl:1: missing text in column 'text'"):
        load_table(n, "text", "label")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_table(tmp_path / "x.txt", "text", "label")


def test_dataset_helpers(tmp_path):
    p = write_csv(tmp_path / "d.csv", ROWS * 5)
    ds = load_table(p, "text", "label")
    assert len(ds) == 20 and ds.num_labels == 3
    assert ds.label_counts() == {"neg": 5, "neutral": 5, "pos": 10}
    a, b = ds.sample(0.5, seed=3), ds.sample(10, seed=3)
    assert a.texts == b.texts and len(a) == 10
    assert ds.sample(10, seed=4).texts != a.texts
    sub = ds.select([3, 0])
    assert sub.texts == [ds.texts[3], ds.texts[0]] and sub.labels.tolist() == [1, 2]
    assert "rows" not in repr(ds)
