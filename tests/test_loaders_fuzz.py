"""Fuzz tests (hypothesis, bounded for CI): the table and GLUE loaders and the mask-file reader
take arbitrary bytes and either return a dataset / MaskSet or raise the library's error for bad
input (DataError / ValueError naming the file), never anything else and never crash."""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instantsoup import MaskSet, runs
from instantsoup.data import DataError, TextDataset, load_glue, load_table

FUZZ = settings(max_examples=int(os.environ.get("INSTANTSOUP_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)

# table-ish text: headers, separators, quotes, numbers, labels, unicode, blank lines
_tokens = st.sampled_from(["sentence", "label", ",", "\t", '"', "\n", "\r\n", "0", "1", "2", "-1", "1e9",
                           "nan", "w1 w2", " ", "é", "\x00", "{", "}", ":", "[", "]", "null", "true", "3.5"])
table_text = st.lists(_tokens, max_size=60).map("".join)


def _write(d: Path, name: str, data: bytes) -> Path:
    p = d / name
    p.write_bytes(data)
    return p


@FUZZ
@given(text=table_text, raw=st.binary(max_size=64), ext=st.sampled_from([".csv", ".tsv", ".jsonl"]),
       use_raw=st.booleans())
def test_table_loader_fuzz(text, raw, ext, use_raw):
    with tempfile.TemporaryDirectory() as d:
        path = _write(Path(d), "t" + ext, raw if use_raw else text.encode())
        try:
            ds = load_table(path, "sentence", "label")
        except DataError as e:
            assert str(path) in str(e) or path.name in str(e), e
            return
        assert isinstance(ds, TextDataset) and len(ds.texts) == len(ds.labels)


@FUZZ
@given(text=table_text, raw=st.binary(max_size=64), use_raw=st.booleans())
def test_glue_loader_fuzz(text, raw, use_raw):
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), "train.tsv", raw if use_raw else text.replace(",", "\t").encode())
        try:
            ds = load_glue("sst2", d, "train")
        except DataError:
            return
        assert isinstance(ds, TextDataset) and len(ds.texts) == len(ds.labels)


def _valid_mask_bytes() -> bytes:
    rng = np.random.default_rng(0)
    m = MaskSet({"a.weight": (rng.random((4, 6)) > 0.5).astype(np.uint8),
                 "b.weight": (rng.random((3, 5)) > 0.5).astype(np.uint8)}, metadata={"method": "omp"})
    with tempfile.TemporaryDirectory() as d:
        m.save(Path(d) / "m.safetensors", seeds=[1], target_sparsity=0.5)
        return (Path(d) / "m.safetensors").read_bytes()


VALID = _valid_mask_bytes()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, len(VALID))), raw=st.one_of(st.none(), st.binary(max_size=80)))
def test_mask_reader_fuzz(edits, cut, raw):
    data = bytearray(VALID)
    for i, b in edits:
        data[i] = b
    if cut is not None:
        data = data[:cut]
    if raw is not None:
        data = bytearray(raw)
    with tempfile.TemporaryDirectory() as d:
        path = _write(Path(d), "m.safetensors", bytes(data))
        try:
            m = MaskSet.load(path)
        except ValueError as e:
            assert str(path) in str(e), e
            return
        assert all(set(np.unique(m[n])) <= {0, 1} for n in m)


def test_the_writer_is_what_safetensors_reads():
    from safetensors.numpy import load_file

    rng = np.random.default_rng(1)
    arrays = {"z": rng.standard_normal((3, 4)).astype(np.float32), "a": np.arange(5, dtype=np.int64),
              "e": np.zeros((0, 2), np.float32), "u": np.ones(7, np.uint8)}
    with tempfile.TemporaryDirectory() as d:
        runs.save_arrays(Path(d) / "x.safetensors", arrays, {"b": "2", "a": "1"})
        back = load_file(str(Path(d) / "x.safetensors"))
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9])
def test_packed_round_masks_roundtrip(n, tmp_path):
    rng = np.random.default_rng(n)
    m = {"w": (rng.random((n, 3)) > 0.5).astype(np.uint8), "v": (rng.random(5) > 0.5).astype(np.uint8)}

    class M:
        masks = m

        def state_dict(self):
            return {"x": np.zeros(2, np.float32)}

    runs.save_checkpoint(tmp_path, M(), None, {"step": 1})
    back = runs.load_packed_masks(runs.packed_masks_file(tmp_path))
    for k, v in m.items():
        np.testing.assert_array_equal(back[k], v)
