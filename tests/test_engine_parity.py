"""Parity of the C engine with transformers.BertForSequenceClassification (torch 2.13 CPU, float32)."""
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import instantsoup  # noqa: E402

CONFIGS = {
    # odd sizes, 3 heads of 12, padding + token types, 3 classes, exact GELU
    "odd-gelu-cls3": dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=50,
                          hidden_act="gelu", num_labels=3),
    # one layer, 4 heads, tanh GELU, binary
    "l1-gelunew-cls2": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                            hidden_act="gelu_new", num_labels=2),
    # relu, regression
    "relu-regression": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                            hidden_act="relu", num_labels=1),
}

VOCAB, MAXPOS = 60, 24


def make_hf(tmp_path, seed=0, dropout=0.0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=MAXPOS, type_vocab_size=2,
                                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                  attn_implementation="eager", **kw)
    hf = transformers.BertForSequenceClassification(cfg).eval()
    # random, non-trivial LayerNorm parameters and biases
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "LayerNorm.weight" in n:
                p.uniform_(0.5, 1.5)
            elif n.endswith("bias"):
                p.normal_(0.0, 0.05)
    d = tmp_path / "hf"
    hf.save_pretrained(d)
    return hf, str(d)


def make_batch(rng, B=4, T=9, num_labels=3):
    ids = rng.integers(1, VOCAB, (B, T))
    am = np.ones((B, T), np.int64)
    lengths = [T, T - 3, 4, 2][:B]
    for b, n in enumerate(lengths):
        am[b, n:] = 0
        ids[b, n:] = 0  # pad token
    tt = np.zeros((B, T), np.int64)
    tt[:, T // 2:] = 1
    tt *= am
    if num_labels == 1:
        y = rng.normal(size=B).astype(np.float32)
    else:
        y = rng.integers(0, num_labels, B)
    return dict(input_ids=ids, attention_mask=am, token_type_ids=tt), y


def torch_batch(batch):
    return {k: torch.tensor(v) for k, v in batch.items()}


def hf_loss(hf, batch, y):
    out = hf(**torch_batch(batch), labels=torch.tensor(y))
    return out.loss, out.logits


def assert_grads_close(model, hf, rtol=1e-4):
    named = dict(hf.named_parameters())
    assert set(model.grads) == set(named)
    for k, g in model.grads.items():
        tg = named[k].grad.numpy()
        err = np.abs(g - tg).max()
        assert err <= rtol * np.abs(tg).max() + 1e-7, (k, err, np.abs(tg).max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_loss_grads(tmp_path, name):
    kw = CONFIGS[name]
    hf, d = make_hf(tmp_path, **kw)
    model = instantsoup.load_model(d)
    assert model.num_labels == kw["num_labels"]
    assert model.problem_type == ("regression" if kw["num_labels"] == 1 else "single_label_classification")
    rng = np.random.default_rng(1)
    batch, y = make_batch(rng, num_labels=kw["num_labels"])
    loss_t, logits_t = hf_loss(hf, batch, y)
    loss_t.backward()
    logits = model.forward(batch)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    loss = model.forward_backward(batch, y)
    assert abs(loss - loss_t.item()) <= 1e-5 * max(1.0, abs(loss_t.item()))
    assert_grads_close(model, hf)
    # the state dict is the HF one
    named = dict(hf.named_parameters())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, named[k].detach().numpy())


def test_label_smoothing(tmp_path):
    hf, d = make_hf(tmp_path, **CONFIGS["odd-gelu-cls3"])
    model = instantsoup.load_model(d)
    batch, y = make_batch(np.random.default_rng(2))
    logits = hf(**torch_batch(batch)).logits
    loss_t = torch.nn.functional.cross_entropy(logits, torch.tensor(y), label_smoothing=0.2)
    loss_t.backward()
    loss = model.forward_backward(batch, y, label_smoothing=0.2)
    assert abs(loss - loss_t.item()) < 1e-5
    assert_grads_close(model, hf)


def torch_adamw_run(hf, batches, lrs, wd, max_norm, masks=None, loss_fn=None, named=None, no_decay=None):
    """torch.optim.AdamW with masks on a transformers model. loss_fn(hf, batch, y) -> (loss, logits)
    (default hf_loss); named: name -> parameter (default hf.named_parameters()); no_decay(name)."""
    loss_fn = loss_fn or hf_loss
    named = dict(hf.named_parameters()) if named is None else named
    no_decay = no_decay or (lambda n: n.endswith("bias") or "LayerNorm" in n)
    groups = [{"params": [p for n, p in named.items() if not no_decay(n)], "weight_decay": wd},
              {"params": [p for n, p in named.items() if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(0.9, 0.98), eps=1e-6)
    if masks:
        with torch.no_grad():
            for k, m in masks.items():
                named[k].mul_(torch.tensor(m, dtype=torch.float32))
    for (batch, y), lr in zip(batches, lrs):
        opt.zero_grad()
        loss, _ = loss_fn(hf, batch, y)
        loss.backward()
        if masks:
            for k, m in masks.items():
                named[k].grad.mul_(torch.tensor(m, dtype=torch.float32))
        torch.nn.utils.clip_grad_norm_(hf.parameters(), max_norm)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        if masks:
            with torch.no_grad():
                for k, m in masks.items():
                    named[k].mul_(torch.tensor(m, dtype=torch.float32))
    return opt


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_adamw_steps(tmp_path, masked, fused):
    kw = CONFIGS["odd-gelu-cls3"]
    hf, d = make_hf(tmp_path, **kw)
    model = instantsoup.load_model(d)
    rng = np.random.default_rng(3)
    masks = None
    if masked:
        masks = {k: (rng.random(v.shape) > 0.4).astype(np.uint8) for k, v in model.masks.items()}
        model.set_masks(masks)
    batches = [make_batch(rng) for _ in range(10)]
    lrs = [1e-3 * (1 - i / 12) for i in range(10)]
    opt = instantsoup.AdamW(model, lr=lrs[0], betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    norms = []
    for (batch, y), lr in zip(batches, lrs):
        if fused:
            opt.train_step(batch, y, lr=lr, max_grad_norm=0.5)
        else:
            model.forward_backward(batch, y)
            opt.step(lr=lr, max_grad_norm=0.5)
        norms.append(opt.last_grad_norm)
    assert max(norms) > 0.5 > min(norms)  # clipping is active on some steps, not all
    assert opt.step_count == 10
    torch_adamw_run(hf, batches, lrs, 0.1, 0.5, masks)
    named = dict(hf.named_parameters())
    for k, v in model.state_dict().items():
        t = named[k].detach().numpy()
        err = np.abs(v - t).max()
        assert err <= 1e-4 * max(1.0, np.abs(t).max()), (k, err)
    if masked:
        sd = model.state_dict()
        for k, m in masks.items():
            off = m == 0
            assert np.all(sd[k][off] == 0.0)
            assert np.all(model.grads[k][off] == 0.0)
            o, shape = model.param_offsets()[k]
            n = math.prod(shape)
            assert np.all(opt.exp_avg[o:o + n].reshape(shape)[off] == 0.0)
            assert np.all(opt.exp_avg_sq[o:o + n].reshape(shape)[off] == 0.0)


def test_prenorm_causal_encoder_against_torch():
    """The encoder stack's pre-LN / causal / quick_gelu variant (CLIP) against a plain torch block."""
    rng = np.random.default_rng(4)
    L, B, T, C, NH, F = 2, 2, 6, 16, 2, 24
    sizes = [3 * C * C, C * C, F * C, C * F, 3 * C, C, C, C, F, C, C, C]
    params = rng.normal(0, 0.2, size=L * sum(sizes)).astype(np.float32)
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    dout = rng.normal(size=(B, T, C)).astype(np.float32)
    am = np.ones((B, T), np.uint8)
    am[1, 4:] = 0
    from instantsoup import _C_test as _T

    y, dx, g = _T.op_encoder(params, x, am, dout, L, NH, 3, True, True, 1e-5, 0.0, 0.0, False, 0, 0)
    # torch reference
    P = torch.tensor(params, requires_grad=True)
    offs = np.cumsum([0] + [s * L for s in sizes])

    def t(i, l):
        per = sizes[i]
        return P[offs[i] + l * per: offs[i] + (l + 1) * per]

    X = torch.tensor(x, requires_grad=True)
    h = X
    HS = C // NH
    keymask = torch.tensor(am, dtype=torch.bool)[:, None, None, :]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        a = torch.nn.functional.layer_norm(h, (C,), t(6, l), t(7, l), 1e-5)
        qkv = a @ t(0, l).view(3 * C, C).T + t(4, l)
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (z.view(B, T, NH, HS).transpose(1, 2) for z in (q, k, v))
        s = q @ k.transpose(-1, -2) / math.sqrt(HS)
        s = s.masked_fill(~(keymask & causal), float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        h = h + o @ t(1, l).view(C, C).T + t(5, l)
        a = torch.nn.functional.layer_norm(h, (C,), t(10, l), t(11, l), 1e-5)
        f = a @ t(2, l).view(F, C).T + t(8, l)
        f = f * torch.sigmoid(1.702 * f)
        h = h + f @ t(3, l).view(C, F).T + t(9, l)
    h.backward(torch.tensor(dout))
    np.testing.assert_allclose(y, h.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, X.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g, P.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_dropout_reproducible(tmp_path):
    hf, d = make_hf(tmp_path, dropout=0.2, **CONFIGS["odd-gelu-cls3"])
    model = instantsoup.load_model(d)
    batch, y = make_batch(np.random.default_rng(5))
    model.eval()
    l_eval = model.forward_backward(batch, y)
    model.train()
    losses = {}
    for s in (1, 2):
        runs = []
        for _ in range(2):
            model.seed(s)
            runs.append((model.forward_backward(batch, y), model.forward_backward(batch, y),
                         model.grads["bert.encoder.layer.0.attention.self.query.weight"].copy()))
        assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
        np.testing.assert_array_equal(runs[0][2], runs[1][2])
        assert runs[0][0] != runs[0][1]  # the step counter moves the masks
        losses[s] = runs[0][0]
    assert losses[1] != losses[2]
    assert losses[1] != l_eval
    # a clone carries the RNG state
    model.seed(7)
    c = model.clone()
    assert c.training and c.forward_backward(batch, y) == model.forward_backward(batch, y)


def test_dropout_gradients_match_finite_differences(tmp_path):
    """With dropout on, the backward pass uses the forward pass's masks (checked numerically)."""
    hf, d = make_hf(tmp_path, dropout=0.3, **CONFIGS["l1-gelunew-cls2"])
    model = instantsoup.load_model(d)
    model.train()
    batch, y = make_batch(np.random.default_rng(6), num_labels=2)
    model.seed(3)
    model.forward_backward(batch, y)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    g = model.grads[name].copy()
    w = model.state_dict()[name]
    rng = np.random.default_rng(0)
    direction = rng.normal(size=w.shape).astype(np.float32)
    eps = 1e-2
    vals = []
    for sgn in (1, -1):
        w += sgn * eps * direction
        model.seed(3)
        vals.append(model.forward_backward(batch, y))
        w -= sgn * eps * direction
    fd = (vals[0] - vals[1]) / (2 * eps)
    an = float((g * direction).sum())
    assert abs(fd - an) <= 2e-2 * abs(an) + 1e-4, (fd, an)


def test_save_pretrained_loads_in_transformers(tmp_path):
    hf, d = make_hf(tmp_path, **CONFIGS["odd-gelu-cls3"])
    model = instantsoup.load_model(d)
    rng = np.random.default_rng(8)
    masks = {k: (rng.random(v.shape) > 0.5).astype(np.uint8) for k, v in model.masks.items()}
    model.set_masks(masks)
    opt = instantsoup.AdamW(model, lr=1e-3)
    batch, y = make_batch(rng)
    opt.train_step(batch, y)
    out = tmp_path / "ours"
    model.save_pretrained(out)
    back = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(back).__name__ == "BertForSequenceClassification"
    with torch.no_grad():
        logits = back(**torch_batch(batch)).logits.numpy()
    np.testing.assert_allclose(model.forward(batch), logits, rtol=1e-5, atol=1e-5)
    k = model.prunable_names[0]
    assert np.all(back.state_dict()[k].numpy()[masks[k] == 0] == 0)


def test_pytorch_model_bin(tmp_path):
    hf, d = make_hf(tmp_path, **CONFIGS["l1-gelunew-cls2"])
    torch.save(hf.state_dict(), os.path.join(d, "pytorch_model.bin"))
    os.remove(os.path.join(d, "model.safetensors"))
    model = instantsoup.load_model(d)
    batch, _ = make_batch(np.random.default_rng(9), num_labels=2)
    with torch.no_grad():
        ref = hf(**torch_batch(batch)).logits.numpy()
    np.testing.assert_allclose(model.forward(batch), ref, rtol=1e-5, atol=1e-5)


def test_real_minilm_checkpoint():
    """The embedded real checkpoint (all-MiniLM-L6-v2: a base BertModel, no 'bert.' prefix)."""
    try:
        from instantsoup.data import default_model_path

        path = str(default_model_path())
    except Exception as e:  # the default model package is optional
        pytest.skip(f"default model not installed ({e})")
    model = instantsoup.load_model(path, num_labels=2, seed=0)
    hf = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2,
                                                                    attn_implementation="eager").eval()
    named = dict(hf.named_parameters())
    with torch.no_grad():  # the head is new on both sides: use ours
        for k in ("classifier.weight", "classifier.bias"):
            named[k].copy_(torch.tensor(model.state_dict()[k]))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (4, 16))
    am = np.ones((4, 16), np.int64)
    am[2, 9:] = 0
    ids[2, 9:] = 0
    batch = dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros_like(ids))
    y = np.array([0, 1, 1, 0])
    loss_t, logits_t = hf_loss(hf, batch, y)
    loss_t.backward()
    loss = model.forward_backward(batch, y)
    np.testing.assert_allclose(model.last_logits, logits_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert abs(loss - loss_t.item()) < 1e-5
    for k, g in model.grads.items():
        tg = named[k].grad.numpy()
        assert np.abs(g - tg).max() <= 2e-4 * np.abs(tg).max() + 1e-6, k
