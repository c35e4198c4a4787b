"""Parity of every encoder family with transformers (torch 2.13 CPU, float32), with the tolerances of
the BERT tests (tests/test_engine_parity.py): logits and loss 1e-5, every gradient 1e-4 relative, 10
masked AdamW steps; exports load in the matching AutoModelFor... class with our logits; ISP and OMP
run end to end on a tiny checkpoint of each."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import instantsoup  # noqa: E402
from family_helpers import (FAMILIES, MAXPOS, hf_logits_loss, is_layernorm, make_batch, make_family,  # noqa: E402
                            named_parameters, published_name)
from test_engine_parity import torch_adamw_run  # noqa: E402

NAMES = list(FAMILIES)


def assert_grads_close(model, hf, rtol=1e-4):
    named = named_parameters(hf)
    assert set(model.grads) == set(named)
    for k, g in model.grads.items():
        tg = named[k].grad.numpy()
        err = np.abs(g - tg).max()
        assert err <= rtol * np.abs(tg).max() + 1e-7, (k, err, np.abs(tg).max())


@pytest.mark.parametrize("family", NAMES)
@pytest.mark.parametrize("num_labels", [3, 1])
def test_forward_loss_grads(tmp_path, family, num_labels):
    if num_labels == 1 and family in ("xlm-roberta", "vit"):
        pytest.skip("regression is covered by the other families")
    hf = make_family(family, tmp_path, num_labels=num_labels)
    model = instantsoup.load_model(tmp_path)
    assert model.kind == family and model.num_labels == num_labels
    batch, y = make_batch(family, np.random.default_rng(1), num_labels)
    loss_t, logits_t = hf_logits_loss(hf, batch, y)
    loss_t.backward()
    np.testing.assert_allclose(model.forward(batch), logits_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    loss = model.forward_backward(batch, y)
    assert abs(loss - loss_t.item()) <= 1e-5 * max(1.0, abs(loss_t.item()))
    assert_grads_close(model, hf)
    named = named_parameters(hf)  # the state dict is the HF one
    assert set(model.state_dict()) == set(named)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, named[k].detach().numpy())
    # the prunable weights: q, k, v, attention output, both feed-forward weights of every layer
    assert len(model.prunable_names) == 6 * hf.config.num_hidden_layers
    assert all(model.state_dict()[k].ndim == 2 and k.endswith(".weight") for k in model.prunable_names)


@pytest.mark.parametrize("family", NAMES)
def test_masked_adamw_steps(tmp_path, family):
    hf = make_family(family, tmp_path)
    model = instantsoup.load_model(tmp_path)
    rng = np.random.default_rng(3)
    masks = {k: (rng.random(v.shape) > 0.4).astype(np.uint8) for k, v in model.masks.items()}
    model.set_masks(masks)
    batches = [make_batch(family, rng) for _ in range(10)]
    lrs = [1e-3 * (1 - i / 12) for i in range(10)]
    opt = instantsoup.AdamW(model, lr=lrs[0], betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for i, ((batch, y), lr) in enumerate(zip(batches, lrs)):
        if i % 2:  # the fused step and forward_backward + step are the same update
            opt.train_step(batch, y, lr=lr, max_grad_norm=0.5)
        else:
            model.forward_backward(batch, y)
            opt.step(lr=lr, max_grad_norm=0.5)
    torch_adamw_run(hf, batches, lrs, 0.1, 0.5, masks, loss_fn=hf_logits_loss, named=named_parameters(hf),
                    no_decay=lambda n: n.endswith("bias") or is_layernorm(n))
    named = named_parameters(hf)
    for k, v in model.state_dict().items():
        t = named[k].detach().numpy()
        # the patch embedding sums over long reductions, amplified by Adam (as CLIP's test)
        tol = 3e-4 if k.endswith("projection.weight") else 1e-4
        err = np.abs(v - t).max()
        assert err <= tol * max(1.0, np.abs(t).max()), (k, err)
    sd = model.state_dict()
    for k, m in masks.items():
        assert np.all(sd[k][m == 0] == 0.0)
        o, shape = model.param_offsets()[k]
        n = math.prod(shape)
        assert np.all(opt.exp_avg[o:o + n].reshape(shape)[m == 0] == 0.0)


@pytest.mark.parametrize("family", NAMES)
def test_export_loads_in_transformers_with_our_logits(tmp_path, family):
    make_family(family, tmp_path / "src")
    model = instantsoup.load_model(tmp_path / "src", num_labels=4, seed=5)  # a new 4-way head
    rng = np.random.default_rng(6)
    model.set_masks({k: (rng.random(v.shape) > 0.5).astype(np.uint8) for k, v in model.masks.items()})
    model.save_pretrained(tmp_path / "out")
    auto = transformers.AutoModelForImageClassification if family == "vit" else \
        transformers.AutoModelForSequenceClassification
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = auto.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == FAMILIES[family][1]
    batch, _ = make_batch(family, rng, 4)
    with torch.no_grad():
        ref = back(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(model.forward(batch), ref, rtol=1e-5, atol=1e-5)
    again = instantsoup.load_model(tmp_path / "out")
    assert again.kind == family and again.num_labels == 4
    np.testing.assert_array_equal(again.forward(batch), model.forward(batch))


@pytest.mark.parametrize("family", ["roberta", "distilbert", "vit"])
def test_a_base_checkpoint_loads_with_a_new_head(tmp_path, family):
    # a base model (RobertaModel, DistilBertModel, ViTModel) has no classification head and its
    # keys lack the model prefix; RoBERTa's and ViT's pooler are not part of the classifier
    hf = make_family(family, tmp_path / "cls")
    base = getattr(transformers, FAMILIES[family][1].replace("ForSequenceClassification", "Model")
                   .replace("ForImageClassification", "Model"))(hf.config)
    base.save_pretrained(tmp_path / "base")
    model = instantsoup.load_model(tmp_path / "base", num_labels=2, seed=0)
    assert model.num_labels == 2
    sd = {published_name(k): v for k, v in base.state_dict().items()}
    prefix = {"roberta": "roberta.", "distilbert": "distilbert.", "vit": "vit."}[family]
    for k, v in model.state_dict().items():
        if k.startswith(prefix):
            np.testing.assert_array_equal(v, sd[k[len(prefix):]].numpy())


@pytest.mark.parametrize("family", NAMES)
def test_isp_and_omp_end_to_end(tmp_path, family):
    from instantsoup import methods
    from instantsoup.config import PruneSettings, Settings, TrainSettings

    make_family(family, tmp_path / "ck", num_labels=2, dropout=0.1)
    task = tiny_task(family)
    for method, prune in (("isp", dict(sparsity=0.5, step=0.5, t=2, denoisers=2, lookahead=2)),
                          ("omp", dict(sparsity=0.5))):
        model = instantsoup.load_model(tmp_path / "ck", num_labels=2, seed=0)
        s = Settings(train=TrainSettings(batch_size=16, lr=1e-3, epochs=2, seed=1),
                     prune=PruneSettings(method=method, **prune))
        run = getattr(methods, {"isp": "instant_soup", "omp": "one_shot"}[method])
        ticket = run(model, task, s, run_dir=tmp_path / method, progress=False)
        total = sum(m.size for m in ticket.masks.values())
        kept = sum(int(np.count_nonzero(m)) for m in ticket.masks.values())
        assert abs(kept - 0.5 * total) <= 1 and set(ticket.masks) == set(model.prunable_names)
        out = tmp_path / method / "ticket" / "checkpoint"
        auto = transformers.AutoModelForImageClassification if family == "vit" else \
            transformers.AutoModelForSequenceClassification
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = auto.from_pretrained(out)
        sd = {published_name(k): v for k, v in back.state_dict().items()}
        for k, m in ticket.masks.items():
            assert (sd[k].numpy()[m == 0] == 0).all()


def tiny_task(family: str):
    """A learnable toy task for a text family (conftest's), or a colour task of 16x16 images."""
    from conftest import make_tiny_task

    if family != "vit":
        pad = FAMILIES[family][2].get("pad_token_id", 0)
        return make_tiny_task(n_train=64, n_val=16, n_test=16, pad_id=pad)
    from instantsoup.data.vision import ImageDataset, ImageProcessor, ImageSplit
    from instantsoup.train import TaskData, accuracy_metric

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 90, (96, 20, 20, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 96)
    for i, y in enumerate(labels):
        imgs[i, :, :, y] += 150
    ds = ImageDataset(imgs, labels, ["red", "green"], ["a photo of a {} thing."], name="colours")
    split = ImageSplit(ds, ImageProcessor(shortest_edge=16, crop_size=(16, 16)))
    return TaskData("colours", split.take(np.arange(64)), split.take(np.arange(64, 80)), accuracy_metric,
                    num_labels=2, test=split.take(np.arange(80, 96)))


def test_info_lists_the_model_types_and_an_unsupported_one_is_named(tmp_path, capsys):
    import json

    from instantsoup.cli import main

    assert main(["info", "--json"]) == 0
    types = json.loads(capsys.readouterr().out)["model_types"].split(", ")
    assert set(FAMILIES) | {"bert", "clip"} == set(types)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported") as e:
        instantsoup.load_model(tmp_path)
    assert all(t in str(e.value) for t in types)


def write_vocab(path, pad_id: int) -> None:
    """A WordPiece vocab.txt of w0 w1 ... with [PAD] at the model's pad_token_id."""
    from family_helpers import VOCAB

    special = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    special.insert(pad_id, "[PAD]")
    words = special + [f"w{i}" for i in range(VOCAB - len(special))]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "distilbert", "electra", "vit"])
def test_cli_prune_and_eval(tmp_path, family, capsys):
    import json

    from instantsoup.cli import main
    from test_cli import write_image_folder, write_table

    ck = tmp_path / "ck"
    make_family(family, ck, num_labels=2)
    if family == "vit":
        pytest.importorskip("PIL")
        data = ["--task", "image_folder", "--data-dir", str(write_image_folder(tmp_path / "images"))]
    else:
        write_vocab(ck, FAMILIES[family][2].get("pad_token_id", 0))
        write_table(tmp_path / "toy.csv")
        data = ["--task", str(tmp_path / "toy.csv"), "--max-length", "16"]
    argv = ["prune", "--method", "omp", "--model", str(ck), *data, "--sparsity", "0.5", "--epochs", "2",
            "--batch-size", "16", "--lr", "1e-3", "--out", str(tmp_path / "runs"), "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    out = run / "ticket" / "checkpoint"
    assert instantsoup.load_model(out).kind == family
    assert main(["eval", str(out), *data]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sparsity"] == pytest.approx(0.5, abs=1e-3) and 0 <= res["test_accuracy"] <= 1


@pytest.mark.parametrize("family", [f for f in NAMES if f != "vit"])
def test_max_length_is_capped_at_the_tokens_the_position_table_allows(tmp_path, family):
    """RoBERTa-style positions start after the padding index, so a table of n rows takes n - pad - 1
    tokens; the cap gives exactly that many, and the engine runs a full-length batch (the old cap at
    max_position_embeddings let the C engine refuse the longest inputs mid-training)."""
    from instantsoup.runner import fit_max_length

    hf = make_family(family, tmp_path)
    limit = fit_max_length(str(tmp_path), 10_000)
    assert limit == MAXPOS
    assert fit_max_length(str(tmp_path), 7) == 7
    batch, _ = make_batch(family, np.random.default_rng(0), B=2, T=limit)
    batch["attention_mask"][:] = 1
    pad = FAMILIES[family][2].get("pad_token_id", 0)
    batch["input_ids"][batch["input_ids"] == pad] = pad + 1
    logits_t = hf(**{k: torch.tensor(v) for k, v in batch.items()}).logits.detach().numpy()
    np.testing.assert_allclose(instantsoup.load_model(tmp_path).forward(batch), logits_t, rtol=1e-5, atol=1e-5)


def test_every_model_meets_the_engine_model_contract(tmp_path):
    from clip_helpers import tiny_clip

    from instantsoup.models import EngineModel

    models = []
    for family in NAMES:
        make_family(family, tmp_path / family)
        models.append(instantsoup.load_model(tmp_path / family))
    (tmp_path / "clip").mkdir()
    tiny_clip(tmp_path / "clip", tokenizer=False)
    models.append(instantsoup.load_model(tmp_path / "clip", num_labels=3))
    for m in models:
        assert isinstance(m, EngineModel)
        other = m.clone()
        assert type(other) is type(m) and other.rng_state() == m.rng_state()
        sd = m.state_dict()
        assert set(m.masks) == set(m.prunable_names) <= set(sd) and set(m.grads) == set(sd)
        assert sum(math.prod(s) for _, s in m.param_offsets().values()) == m.num_parameters
        assert set(m.cost_dims()) == {"L", "H", "I", "K"}
    with pytest.raises(TypeError, match="engine model"):
        instantsoup.AdamW(object())
    with pytest.raises(TypeError, match="copy_from"):
        models[0].copy_from(models[-1])
