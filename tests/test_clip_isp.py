"""ISP end to end on a tiny random CLIP and a generated image task (issue 7's acceptance): exact
sparsity, and the exported directory loads in transformers with our image features."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
methods = pytest.importorskip("instantsoup.methods")

from clip_helpers import tiny_clip  # noqa: E402

import instantsoup  # noqa: E402
from instantsoup.data.vision import ImageDataset, ImageProcessor, ImageSplit  # noqa: E402


def colour_task(rng, n=96):
    """Class = the dominant colour channel of a noisy 20x20 image."""
    from instantsoup.train import TaskData, accuracy_metric

    imgs = rng.integers(0, 90, (n, 20, 20, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    for i, y in enumerate(labels):
        imgs[i, :, :, y] += 150
    ds = ImageDataset(imgs, labels, ["red", "green", "blue"], ["a photo of a {} thing."], name="colours")
    split = ImageSplit(ds, ImageProcessor(shortest_edge=16, crop_size=(16, 16)))
    task = TaskData("colours", split.take(np.arange(64)), split.take(np.arange(64, 80)), accuracy_metric,
                    num_labels=3, test=split.take(np.arange(80, n)))
    return ds, task


def test_isp_on_tiny_clip(tmp_path, rng):
    from instantsoup.config import PruneSettings, Settings, TrainSettings

    ck = tmp_path / "ck"
    ck.mkdir()
    tiny_clip(ck)
    ds, task = colour_task(rng)
    model = instantsoup.load_model(ck)
    model.zero_shot_head(ds.classnames, ds.templates)
    s = Settings(train=TrainSettings(batch_size=16, lr=1e-3, epochs=6, seed=1),
                 prune=PruneSettings(method="isp", sparsity=0.6, step=0.3, t=2, denoisers=2, lookahead=3))
    ticket = methods.instant_soup(model, task, s, run_dir=tmp_path / "run", progress=False)
    total = sum(m.size for m in ticket.masks.values())
    kept = sum(int(np.count_nonzero(m)) for m in ticket.masks.values())
    assert abs(kept - 0.4 * total) <= 1
    assert set(ticket.masks) == set(model.prunable_names)
    out = tmp_path / "run" / "ticket" / "checkpoint"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = transformers.CLIPModel.from_pretrained(out).eval()
    px = task.test.collate(np.arange(8))[0]["pixel_values"]
    with torch.no_grad():
        f = back.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output.numpy()
    np.testing.assert_allclose(model.encode_image(px), f, rtol=1e-5, atol=1e-5)
    sd = back.state_dict()
    for k, m in ticket.masks.items():
        assert (sd[k].numpy()[m == 0] == 0).all()


def test_rerun_of_a_finished_clip_run_does_no_training(tmp_path, rng, monkeypatch):
    # the exported CLIP checkpoint also holds the text tower: reloading the ticket must not trip
    # over those names
    from instantsoup.config import PruneSettings, Settings, TrainSettings
    from instantsoup.train import Trainer

    ck = tmp_path / "ck"
    ck.mkdir()
    tiny_clip(ck)
    ds, task = colour_task(rng)

    def model():
        m = instantsoup.load_model(ck)
        m.zero_shot_head(ds.classnames, ds.templates)
        return m

    s = Settings(train=TrainSettings(batch_size=16, lr=1e-3, epochs=1, seed=1),
                 prune=PruneSettings(method="omp", sparsity=0.5))
    a = methods.one_shot(model(), task, s, run_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("a finished run trained again"))
    m = model()
    b = methods.one_shot(m, task, s, run_dir=tmp_path / "run", progress=False)
    assert b.metrics == a.metrics
    for k in a.masks:
        np.testing.assert_array_equal(m.masks[k], a.masks[k])
    for k, v in a.weights.items():
        np.testing.assert_array_equal(m.state_dict()[k], v)
