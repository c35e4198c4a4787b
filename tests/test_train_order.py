"""The trainer's data order: length-bucketed batches from instantsoup.data.Batches, a pure function
of (seed, step), covering every example (or every example of a denoiser's pool) once per epoch."""
import numpy as np
import pytest

from conftest import make_tiny_task
from instantsoup.config import Settings, SettingsError, TrainSettings
from instantsoup.train import Trainer


def padding(task, order, steps):
    real = padded = 0
    for k in range(steps):
        lens = np.array([len(task.train.input_ids[i]) for i in order.indices(k)])
        real += lens.sum()
        padded += lens.max() * len(lens)
    return 1 - real / padded


def test_bucketed_order_pads_less_and_covers_each_epoch():
    task = make_tiny_task(n_train=400, vocab=60)
    bucketed = Trainer(TrainSettings(batch_size=16, seed=3), task, progress=False)
    plain = Trainer(TrainSettings(batch_size=16, seed=3, length_buckets=0), task, progress=False)
    spe = bucketed.steps_per_epoch
    assert spe == plain.steps_per_epoch == 25
    assert padding(task, bucketed.order, 2 * spe) < 0.5 * padding(task, plain.order, 2 * spe)
    for e in range(2):
        seen = np.concatenate([bucketed.order.indices(e * spe + k) for k in range(spe)])
        assert sorted(seen.tolist()) == list(range(400))
    # epochs differ, and the order is a pure function of (seed, step): a fresh trainer agrees
    assert not np.array_equal(bucketed.order.indices(0), bucketed.order.indices(spe))
    again = Trainer(TrainSettings(batch_size=16, seed=3), task, progress=False)
    for k in (7, 0, 30, 3):  # any access order (resume)
        np.testing.assert_array_equal(again.order.indices(k), bucketed.order.indices(k))
    other = Trainer(TrainSettings(batch_size=16, seed=4), task, progress=False)
    assert not np.array_equal(other.order.indices(0), bucketed.order.indices(0))


def test_denoiser_pool_order():
    task = make_tiny_task(n_train=300, vocab=60)
    tr = Trainer(TrainSettings(batch_size=16, seed=0), task, progress=False)
    pool = np.sort(np.random.default_rng(0).choice(300, 150, replace=False))
    o = tr.make_order(11, pool=pool)
    assert o.steps_per_epoch == 10
    seen = np.concatenate([o.indices(k) for k in range(10)])
    assert sorted(seen.tolist()) == pool.tolist()
    np.testing.assert_array_equal(tr.make_order(11, pool=pool).indices(4), o.indices(4))


def test_length_buckets_setting_and_hash():
    assert "length_buckets" not in Settings(train=TrainSettings(length_buckets=0)).identity()["train"]
    assert Settings().identity()["train"]["length_buckets"] == 16
    with pytest.raises(SettingsError, match="length_buckets"):
        Settings(train=TrainSettings(length_buckets=-1)).validate()


def test_images_keep_the_plain_order():
    """Images have no lengths (an ImageSplit counts each as 1): length_buckets leaves their order alone."""
    from test_clip_isp import colour_task

    _, task = colour_task(np.random.default_rng(0))
    default = Trainer(TrainSettings(batch_size=16, seed=3), task, progress=False)
    plain = Trainer(TrainSettings(batch_size=16, seed=3, length_buckets=0), task, progress=False)
    for k in range(2 * default.steps_per_epoch):
        np.testing.assert_array_equal(default.order.indices(k), plain.order.indices(k))
