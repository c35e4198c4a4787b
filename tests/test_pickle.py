"""Models, tickets, masks and settings pickle: protocol 5 writes each C buffer once (or hands it out
of band without a copy), and the copy behaves exactly like the original."""
import concurrent.futures as cf
import multiprocessing
import pickle

import numpy as np
import pytest

import instantsoup
from instantsoup.masks import MaskSet


def _batch(n=4, t=12, vocab=60, seed=0):
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1, vocab, (n, t))}, rng.integers(0, 2, n)


def _trained(model):
    """Masks, a dropout RNG that has advanced, train mode: every part of the state matters."""
    model.set_masks(instantsoup.magnitude_masks(model, 0.4))
    model.seed(7)
    model.train()
    batch, y = _batch()
    model.forward_backward(batch, y)
    return model


def _same_behaviour(a, b):
    batch, y = _batch(seed=1)
    assert a.rng_state() == b.rng_state() and a.training == b.training
    np.testing.assert_array_equal(a.flat_parameters(), b.flat_parameters())
    for k in a.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
    assert a.forward_backward(batch, y) == b.forward_backward(batch, y)  # same dropout draws
    a.eval(), b.eval()
    np.testing.assert_array_equal(a.forward(batch), b.forward(batch))


def _data_address(a):
    return np.asarray(a).__array_interface__["data"][0]


def test_bert_roundtrip_in_band_one_copy(make_model, one_thread):
    m = _trained(make_model())
    data = pickle.dumps(m, protocol=5)
    payload = m.flat_parameters().nbytes + sum(v.nbytes for v in m.masks.values())
    assert payload <= len(data) < payload + 16_384  # each buffer once, no second copy in the stream
    m2 = pickle.loads(data)
    assert m2.source_path == m.source_path and m2.config == m.config
    assert _data_address(m2.flat_parameters()) != _data_address(m.flat_parameters())
    assert not np.any(m2.grads["classifier.weight"])  # gradients are not carried
    _same_behaviour(m, m2)


def test_bert_out_of_band_buffers_are_the_model_memory(make_model, one_thread):
    m = _trained(make_model())
    buffers = []
    data = pickle.dumps(m, protocol=5, buffer_callback=buffers.append)
    assert len(data) < 16_384
    addresses = {_data_address(np.frombuffer(b.raw(), np.uint8)) for b in buffers}
    assert _data_address(m.flat_parameters()) in addresses  # no copy while pickling
    assert _data_address(m._mask_buf) in addresses
    m2 = pickle.loads(data, buffers=buffers)
    w0 = float(m.flat_parameters()[0])
    m.flat_parameters()[0] = w0 + 1.0  # the copy owns its own C buffer
    assert m2.flat_parameters()[0] == np.float32(w0)
    m.flat_parameters()[0] = w0
    _same_behaviour(m, m2)


def test_maskset_pickles_its_flat_buffer_once(make_model):
    ms = instantsoup.magnitude_masks(make_model(), 0.5)
    data = pickle.dumps(ms, protocol=5)
    assert ms.numel <= len(data) < ms.numel + 16_384
    ms2 = pickle.loads(data)
    assert isinstance(ms2, MaskSet) and ms2.names == ms.names and ms2.num_kept == ms.num_kept
    assert all(np.array_equal(ms[k], ms2[k]) for k in ms)
    buffers = []
    pickle.dumps(ms, protocol=5, buffer_callback=buffers.append)
    assert [_data_address(np.frombuffer(b.raw(), np.uint8)) for b in buffers] == [_data_address(ms.flat)]
    packed = ms.pack()
    assert np.array_equal(pickle.loads(pickle.dumps(packed, protocol=5)).unpack().flat, ms.flat)


def test_ticket_and_settings_roundtrip(make_model):
    m = make_model()
    ms = instantsoup.magnitude_masks(m, 0.5)
    m.set_masks(ms)
    t = instantsoup.Ticket(method="omp", target_sparsity=0.5, masks=ms, weights=m.state_dict(),
                           metrics={"val_accuracy": 0.5}, history=[{"round": 0}], base_model="tiny")
    data = pickle.dumps(t, protocol=5)
    payload = m.flat_parameters().nbytes + ms.numel
    assert len(data) < payload + 65_536
    t2 = pickle.loads(data)
    assert t2.summary() == t.summary() and t2.history == t.history
    assert all(np.array_equal(t.weights[k], t2.weights[k]) for k in t.weights)
    s = instantsoup.Settings()
    assert pickle.loads(pickle.dumps(s, protocol=5)) == s


def _child_logits(model, ticket, settings):
    batch, _ = _batch(seed=2)
    model.eval()
    return model.forward(batch), ticket.sparsity, settings


def test_model_ticket_settings_travel_to_another_process(make_model, one_thread):
    m = _trained(make_model()).eval()
    ms = MaskSet(m.masks)
    t = instantsoup.Ticket(method="omp", target_sparsity=0.4, masks=ms, weights=m.state_dict())
    s = instantsoup.Settings()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        logits, sparsity, s2 = pool.submit(_child_logits, m, t, s).result(timeout=300)
    np.testing.assert_array_equal(logits, m.forward(_batch(seed=2)[0]))
    assert sparsity == t.sparsity and s2 == s


def test_clip_roundtrip(tmp_path, one_thread):
    pytest.importorskip("transformers")
    from clip_helpers import tiny_clip

    tiny_clip(tmp_path)
    for num_labels in (None, 3):  # frozen zero-shot head / trainable linear probe
        m = instantsoup.load_model(str(tmp_path), num_labels=num_labels)
        m.zero_shot_head(["cat", "dog", "car"], ["a photo of a {}."])
        m.set_masks(instantsoup.magnitude_masks(m, 0.3))
        m.seed(5)
        m.train()
        x = {"pixel_values": np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)}
        y = np.array([0, 2])
        m.forward_backward(x, y)
        data = pickle.dumps(m, protocol=5)
        assert len(data) < m.flat_parameters().nbytes + m.text._params.nbytes + m._mask_buf.nbytes + 65_536
        m2 = pickle.loads(data)
        assert m2.rng_state() == m.rng_state() and m2.classnames == m.classnames
        np.testing.assert_array_equal(m2.flat_parameters(), m.flat_parameters())
        for a, b in zip(m2.head(), m.head()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(m2.text.encode(np.array([[0, 5, 1]])), m.text.encode(np.array([[0, 5, 1]])))
        assert m2.forward_backward(x, y) == m.forward_backward(x, y)
        m.eval(), m2.eval()
        np.testing.assert_array_equal(m2.forward(x), m.forward(x))
