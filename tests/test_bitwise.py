"""A refactor of the engine changes no bit: short seeded ISP runs on BERT and CLIP give the masks
and weights recorded before it (tests/bitwise_runs.py, tests/data/bitwise_sha256.json). With plain
shuffled batches (``length_buckets=0``) BERT gives the value recorded before the engine core refactor
(issue 12), and so does CLIP (images are never length-bucketed); BERT with the default
length-bucketed batches (issue 13, another data order) gives its own recorded value.

The record is per OpenBLAS core type (sgemm kernels differ between cores); on a machine whose core
has no record the test is skipped with the values to record."""
from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bitwise_runs import machine_key, run_all  # noqa: E402


def test_bert_and_clip_runs_are_bitwise_identical_to_the_record():
    with open(os.path.join(os.path.dirname(__file__), "data", "bitwise_sha256.json")) as f:
        record = json.load(f)
    got = run_all()
    key = machine_key()
    if key not in record:
        pytest.skip(f"no record for OpenBLAS core {key!r}; this machine gives {json.dumps(got)}")
    assert got == record[key]
