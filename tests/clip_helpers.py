"""Shared test helpers for CLIP: a tiny CLIP tokenizer and tiny random CLIP checkpoints."""
from __future__ import annotations

import json
import warnings

CORPUS = ["a photo of a cat.", "a blurry photo of the dog!", "the quick brown fox jumps over the lazy dog",
          "it's a photo of the number: \"7\".", "satellite imagery of a river", "i love my car",
          "a centered satellite photo of annual crop land", "red and white circle 20 kph speed limit"] * 10


def write_clip_tokenizer(d, vocab_size: int = 600) -> None:
    """vocab.json + merges.txt of a byte-level BPE with </w> word ends, trained on a few prompts
    (every byte alone and word-final is in the vocabulary; <|startoftext|> = 0, <|endoftext|> = 1)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>",
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.model.save(str(d))
    vocab = json.loads((d / "vocab.json").read_text())
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for t in (ch, ch + "</w>"):
            vocab.setdefault(t, len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab))
    return len(vocab)


def tiny_clip(path, *, vision=None, text=None, projection_dim=12, seed=0, tokenizer=True):
    """Save a random transformers CLIPModel (tiny) to ``path``; returns the torch model (eval)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    vocab = None
    if tokenizer:
        vocab = write_clip_tokenizer(path)
    v = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16,
             patch_size=4)
    v.update(vision or {})
    t = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
             vocab_size=vocab or 99, max_position_embeddings=24, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    t.update(text or {})
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = CLIPConfig(vision_config=v, text_config=t, projection_dim=projection_dim)
        m = CLIPModel(cfg).eval()
        with torch.no_grad():  # break the symmetric init so every tensor matters
            for p in m.parameters():
                if p.ndim == 1 and p.numel() > 1:
                    p.add_(0.1 * torch.randn_like(p))
            m.logit_scale.fill_(2.3)
        m.save_pretrained(path)
    return m
