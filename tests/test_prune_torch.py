"""Pruning against PyTorch: torch.nn.utils.prune.global_unstructured / l1_unstructured round after
round (amount converted from our absolute sparsity), and the torch.nn.utils.prune interop."""
import numpy as np
import pytest

import instantsoup as isp

torch = pytest.importorskip("torch")
from torch.nn.utils import prune  # noqa: E402


class Holder(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(a.copy()))


SHAPE_MIXES = [
    [(64, 64), (64, 64), (64, 64), (64, 64), (256, 64), (64, 256)],  # one BERT-like layer, hidden 64
    [(3, 5), (101,), (40, 41), (2, 3, 7)],
    [(1000,), (1,), (17, 300)],
]
SCHEDULES = [
    [1 - 0.9 ** i for i in range(1, 8)],  # ISP/IMP: 10% of the remaining weights per round
    [0.2, 0.2, 0.5, 0.51, 0.8, 0.95, 0.99],  # a repeated target, small and large steps
]


def _params(rng, shapes):
    return {f"l{i}.weight": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}


@pytest.mark.parametrize("shapes", SHAPE_MIXES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_global_matches_torch_round_after_round(rng, shapes, schedule):
    p = _params(rng, shapes)
    mods = [Holder(a) for a in p.values()]
    pairs = [(m, "weight") for m in mods]
    cur = None
    for s in schedule:
        s0 = 0.0 if cur is None else cur.sparsity
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured,
                                  amount=isp.to_torch_amount(s, s0, numel=sum(a.size for a in p.values())))
        ours = isp.magnitude_masks(p, s, current=cur)
        for (n, _), m in zip(p.items(), mods):
            np.testing.assert_array_equal(ours[n], m.weight_mask.numpy().astype(np.uint8),
                                          err_msg=f"{n} at sparsity {s}")
        assert ours.num_masked == round(s * ours.numel)
        cur = ours


@pytest.mark.parametrize("shapes", SHAPE_MIXES)
def test_layer_scope_matches_l1_unstructured(rng, shapes):
    p = _params(rng, shapes)
    mods = {n: Holder(a) for n, a in p.items()}
    cur = None
    for s in SCHEDULES[0][:4]:
        ours = isp.magnitude_masks(p, s, scope="layer", current=cur)
        for n, m in mods.items():
            s0 = 0.0 if cur is None else cur.layer_sparsity()[n]
            prune.l1_unstructured(m, "weight", amount=isp.to_torch_amount(s, s0, numel=p[n].size))
            np.testing.assert_array_equal(ours[n], m.weight_mask.numpy().astype(np.uint8), err_msg=n)
        cur = ours


def test_global_matches_torch_with_integer_amount(rng):
    # the exact-count route: torch with an integer amount = round(s*P) - already masked
    p = _params(rng, [(50, 50), (7,)])
    mods = [Holder(a) for a in p.values()]
    cur = None
    for s in (0.25, 0.5, 0.75):
        ours = isp.magnitude_masks(p, s, current=cur)
        already = 0 if cur is None else cur.num_masked
        prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured,
                                  amount=isp.masked_count(s, ours.numel) - already)
        for (n, _), m in zip(p.items(), mods):
            np.testing.assert_array_equal(ours[n], m.weight_mask.numpy().astype(np.uint8))
        cur = ours


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg)


PRUNABLE = ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
            "attention.output.dense.weight", "intermediate.dense.weight", "output.dense.weight")


def _prunable(model):
    sd = model.state_dict()
    return {n: sd[n].numpy() for n in sd if n.startswith("bert.encoder.layer.") and n.endswith(PRUNABLE)
            and "attention.output.LayerNorm" not in n}


def test_to_and_from_torch_prune(tmp_path):
    model = _tiny_bert()
    params = _prunable(model)
    assert len(params) == 12
    masks = isp.magnitude_masks(params, 0.6)
    masks.to_torch_prune(model)
    for n in masks:
        mod = model.get_submodule(n.rsplit(".", 1)[0])
        np.testing.assert_array_equal(mod.weight_mask.numpy().astype(np.uint8), masks[n])
        assert torch.count_nonzero(mod.weight).item() == masks.counts[n]
    back = isp.MaskSet.from_torch_prune(model)
    assert back == masks
    # a bare BertModel: the leading "bert." is dropped on the way in, added back with prefix=
    bare = _tiny_bert().bert
    masks.to_torch_prune(bare)
    assert isp.MaskSet.from_torch_prune(bare, prefix="bert.") == masks
    # the documented snippet: safetensors + torch only
    path = tmp_path / "m.safetensors"
    masks.save(path, method="magnitude")
    from safetensors.numpy import load_file

    fresh = _tiny_bert()
    for name, m in load_file(str(path)).items():
        module_name, param = name.rsplit(".", 1)
        prune.custom_from_mask(fresh.get_submodule(module_name), param, torch.from_numpy(m))
    assert isp.MaskSet.from_torch_prune(fresh) == masks
    with pytest.raises(KeyError, match="name_map"):
        isp.MaskSet({"nope.weight": np.ones(3, np.uint8)}).to_torch_prune(model)
    with pytest.raises(ValueError, match="no pruning masks"):
        isp.MaskSet.from_torch_prune(torch.nn.Linear(2, 2))


def test_average_weights_accepts_torch_state_dicts():
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    soup = isp.average_weights([a.state_dict(), b.state_dict()])
    ref = (a.weight.detach().double() + b.weight.detach().double()) / 2
    np.testing.assert_array_equal(soup["weight"], ref.float().numpy())


def test_plain_fraction_conversion_matches_torch(rng):
    # the textbook conversion amount = (s - s0) / (1 - s0) with our achieved s0
    p = _params(rng, SHAPE_MIXES[0])
    mods = [Holder(a) for a in p.values()]
    cur = None
    for s in SCHEDULES[0]:
        s0 = 0.0 if cur is None else cur.sparsity
        prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured,
                                  amount=isp.to_torch_amount(s, s0))
        ours = isp.magnitude_masks(p, s, current=cur)
        for (n, _), m in zip(p.items(), mods):
            np.testing.assert_array_equal(ours[n], m.weight_mask.numpy().astype(np.uint8))
        cur = ours
