"""Batches: padding, bucketing, seeded shuffling, fractional epochs, subsets, resume by step."""
import numpy as np
import pytest

from instantsoup.data import Batches, Encoded


def make_encoded(n=103, seed=0, pairs=True):
    rng = np.random.default_rng(seed)
    ids, types = [], []
    for i in range(n):
        la = int(rng.integers(1, 40))
        lb = int(rng.integers(1, 20)) if pairs else 0
        x = [101] + list(rng.integers(1000, 2000, la)) + [102] + (list(rng.integers(1000, 2000, lb)) + [102] if lb else [])
        ids.append([int(v) for v in x])
        types.append([0] * (la + 2) + [1] * (lb + 1 if lb else 0))
    labels = rng.integers(0, 3, n)
    return Encoded(ids, types), labels


def test_batch_format_and_padding():
    enc, labels = make_encoded()
    b = Batches(enc, labels, batch_size=8, seed=1, pad_id=7)
    seen = []
    for batch, y in b:
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
        B, T = batch["input_ids"].shape
        for v in batch.values():
            assert v.dtype == np.int64 and v.shape == (B, T) and v.flags.c_contiguous
        assert y.dtype == np.int64 and y.shape == (B,)
        lens = batch["attention_mask"].sum(1)
        assert T == lens.max()
        for r in range(B):
            row = batch["input_ids"][r]
            # find which example this is, by content
            k = next(i for i, x in enumerate(enc.input_ids) if len(x) == lens[r] and list(row[: lens[r]]) == x)
            assert np.all(row[lens[r]:] == 7)
            assert list(batch["token_type_ids"][r, : lens[r]]) == enc.token_type_ids[k]
            assert np.all(batch["token_type_ids"][r, lens[r]:] == 0)
            assert y[r] == labels[k]
            seen.append(k)
    assert sorted(seen) == list(range(len(enc.input_ids)))    # one epoch = every example once
    assert b.steps_per_epoch == 13 == len(b)


def test_epoch_covers_all_once_and_depends_only_on_seed_and_epoch():
    enc, labels = make_encoded(n=250)
    for bucket in (True, False):
        b1 = Batches(enc, labels, batch_size=16, seed=5, bucket=bucket, bucket_batches=3)
        b2 = Batches(enc, labels, batch_size=16, seed=5, bucket=bucket, bucket_batches=3)
        for e in range(3):
            idx = np.concatenate([b1.batch_indices(e * b1.steps_per_epoch + k) for k in range(b1.steps_per_epoch)])
            assert sorted(idx.tolist()) == list(range(250))
        # b2 visits epochs in another order but gets the same batches
        for step in [40, 3, 17, 0, 31]:
            np.testing.assert_array_equal(b1.batch_indices(step), b2.batch_indices(step))
        e0 = [b1.batch_indices(k).tolist() for k in range(b1.steps_per_epoch)]
        e1 = [b1.batch_indices(b1.steps_per_epoch + k).tolist() for k in range(b1.steps_per_epoch)]
        assert e0 != e1                                   # reshuffled each epoch
        other = Batches(enc, labels, batch_size=16, seed=6, bucket=bucket, bucket_batches=3)
        assert [other.batch_indices(k).tolist() for k in range(other.steps_per_epoch)] != e0


def test_bucketing_reduces_padding():
    enc, labels = make_encoded(n=400)
    plain = Batches(enc, labels, batch_size=16, seed=0, bucket=False)
    bucketed = Batches(enc, labels, batch_size=16, seed=0, bucket=True)
    assert bucketed.padding_fraction() < 0.5 * plain.padding_fraction()
    ordered = Batches(enc, labels, batch_size=16, shuffle=False, bucket=True)
    assert ordered.padding_fraction() <= bucketed.padding_fraction()
    no_shuffle = Batches(enc, labels, batch_size=16, shuffle=False, bucket=False)
    assert np.concatenate(list(no_shuffle.batch_indices(k) for k in range(len(no_shuffle)))).tolist() == list(range(400))


def test_resume_at_step_is_identical():
    enc, labels = make_encoded(n=90)
    b = Batches(enc, labels, batch_size=8, seed=3)
    full = list(b.iter_steps(num_steps=40, with_step=True))
    assert [s for s, _, _ in full] == list(range(40))
    fresh = Batches(enc, labels, batch_size=8, seed=3)         # a new process resuming at step 23
    resumed = list(fresh.iter_steps(num_steps=17, start=23))
    for (s, b0, y0), (b1, y1) in zip(full[23:], resumed):
        for k in b0:
            np.testing.assert_array_equal(b0[k], b1[k])
        np.testing.assert_array_equal(y0, y1)
    assert len(resumed) == 17


def test_fractional_epochs():
    enc, labels = make_encoded(n=100)
    b = Batches(enc, labels, batch_size=10, seed=0)
    assert b.num_steps(0.1) == 1 and b.num_steps(2.5) == 25 and b.num_steps(0) == 0 and b.num_steps(0.01) == 1
    assert len(list(b.iter_steps(epochs=0.35))) == 4     # round(3.5) = 4
    assert len(list(b.iter_steps(epochs=2.5, start=20))) == 5
    assert len(list(b.iter_steps(epochs=2.5, start=20, num_steps=2))) == 2
    with pytest.raises(ValueError):
        b.num_steps(-1)
    d = Batches(enc, labels, batch_size=30, seed=0, drop_last=True)
    assert d.steps_per_epoch == 3 and all(len(d.batch_indices(k)) == 30 for k in range(9))


def test_subsets_are_seeded_and_share_data():
    enc, labels = make_encoded(n=200)
    b = Batches(enc, labels, batch_size=8, seed=0)
    s1, s2, s3 = b.subset(0.25, seed=11), b.subset(50, seed=11), b.subset(0.25, seed=12)
    assert s1.num_examples == 50
    np.testing.assert_array_equal(s1.indices, s2.indices)
    assert not np.array_equal(s1.indices, s3.indices)
    assert set(s1.indices) <= set(range(200)) and len(set(s1.indices)) == 50
    np.testing.assert_array_equal(s1.labels, labels[s1.indices])
    for k in range(s1.steps_per_epoch * 2):
        assert set(s1.batch_indices(k)) <= set(s1.indices.tolist())
    nested = s1.subset(10, seed=1, batch_size=4)
    assert set(nested.indices) <= set(s1.indices) and nested.batch_size == 4
    assert s1._store is b._store
    with pytest.raises(ValueError):
        b.subset(0, seed=1)
    with pytest.raises(ValueError):
        b.subset(1.5, seed=1)
    with pytest.raises(ValueError):
        b.subset(201, seed=1)


def test_collect_restores_dataset_order():
    enc, labels = make_encoded(n=77)
    b = Batches(enc, labels, batch_size=10, shuffle=False, bucket=True)

    def fn(batch):    # a "model" whose output identifies the example: its first 3 ids + length
        return np.concatenate([batch["input_ids"][:, 1:3], batch["attention_mask"].sum(1, keepdims=True)], 1)

    out = b.collect(fn)
    want = np.array([[x[1], x[2], len(x)] for x in enc.input_ids])
    np.testing.assert_array_equal(out, want)
    sub = b.subset(20, seed=2)
    np.testing.assert_array_equal(sub.collect(fn), want[sub.indices])
    shuffled = Batches(enc, labels, batch_size=10, seed=9)
    np.testing.assert_array_equal(shuffled.collect(fn), want)


def test_inputs_and_options():
    ids = [[101, 5, 102], [101, 6, 7, 8, 102]]
    b = Batches(ids, None, batch_size=2, shuffle=False, bucket=False, pad_to_multiple_of=8)
    batch, y = b.batch(0)
    assert y is None and batch["input_ids"].shape == (2, 8) and batch["token_type_ids"].max() == 0
    b2 = Batches((ids, [[0, 0, 0], [0, 0, 0, 1, 1]]), np.array([0.5, 1.5]), batch_size=2, shuffle=False)
    batch, y = b2.batch(0)
    assert y.dtype == np.float32 and batch["token_type_ids"].sum() == 2
    with pytest.raises(ValueError, match="labels shape"):
        Batches(ids, np.zeros(3), batch_size=2)
    with pytest.raises(ValueError, match="token types"):
        Batches((ids, [[0, 0, 0], [0]]), None, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(ids, None, batch_size=0)
    with pytest.raises(ValueError, match="no tokens"):
        Batches([[101], []], None, batch_size=1)
    with pytest.raises(ValueError, match="no examples"):
        Batches([], None, batch_size=1)
    assert b.with_options(shuffle=True, seed=4).seed == 4
