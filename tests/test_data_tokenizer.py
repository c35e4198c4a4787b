"""Tokenizer parity with transformers' BertTokenizerFast on a generated WordPiece vocabulary."""
import json

import pytest

from instantsoup.data import Tokenizer
from instantsoup.data.errors import DataError

transformers = pytest.importorskip("transformers")

SAMPLE = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé — coöperate, façade, Ångström, Ωmega",
    "e\u0301 combining accent and ÉCOLE",
    "東京は日本の首都です。中文分词测试",
    "mixed日本English",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 150,                                   # longer than max_input_chars_per_word -> [UNK]
    "",
    "   ",
    "Don't stop—believing… (really?!) [sic] {ok} <tag> @user #hash $5.00 100% a+b=c",
    "tab\there\nnew line\r\nand\u00a0nbsp",
    "zero\u200bwidth and control\x00char\x07s",
    "emoji 😀 👍🏽 test",
    "[MASK] token [SEP] inside [CLS] text [PAD]",
    "unbelievable unhappiness reorganization",
    "مرحبا بالعالم Ελληνικά Русский текст",
    "ﬁ ligature and ＦＵＬＬＷＩＤＴＨ letters",
    "UPPER lower MiXeD CaSe",
    "numbers 1234567890 3.14159 1,000,000",
]
PAIRS = [
    ("The cat sat on the mat.", "A cat is sitting."),
    ("", "only the second segment"),
    ("only the first segment", ""),
    ("a very long first sentence " * 8, "short"),
    ("short", "a very long second sentence " * 8),
    ("equal length one two three", "equal length four five six"),
    ("東京は日本の首都です", "Café naïve résumé"),
]


def make_vocab(path, cased: bool):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = set()
    for text in SAMPLE + [a + b for a, b in PAIRS]:
        chars.update(text)
    chars.update("abcdefghijklmnopqrstuvwxyz0123456789")
    chars = {c if cased else c.lower() for c in chars}      # an uncased vocabulary has no capitals
    chars = sorted(c for c in chars if not c.isspace() and c.isprintable() and len(c) == 1)
    words = ["the", "quick", "brown", "fox", "jump", "over", "lazy", "dog", "hello", "world", "cat", "sat",
             "on", "mat", "un", "believ", "happi", "re", "organ", "test", "super", "cal", "token", "text",
             "long", "first", "second", "sentence", "short", "equal", "length", "one", "two", "three",
             "cafe", "naive", "resume", "upper", "lower", "mixed", "case", "numbers", "emoji", "ok"]
    pieces = ["##s", "##ing", "##ed", "##able", "##ness", "##ization", "##ly", "##er", "##a", "##e",
              "##i", "##o", "##u", "##n", "##t", "##r", "##l", "##ation", "##ist", "##ic", "##ous"]
    pieces += ["##" + c for c in chars]
    if cased:
        words += ["Hello", "The", "UPPER", "MiXeD", "CaSe", "Café", "ÉCOLE", "Ångström"]
    vocab = specials + chars + words + pieces
    seen, out = set(), []
    for t in vocab:
        if t not in seen:
            seen.add(t)
            out.append(t)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def hf_tokenizer(vocab_file, **kw):
    """transformers' BertTokenizerFast from a directory holding only vocab.txt (works on 4.x and 5.x)."""
    d = vocab_file.parent / ("hf_" + vocab_file.stem)
    d.mkdir(exist_ok=True)
    (d / "vocab.txt").write_bytes(vocab_file.read_bytes())
    return transformers.BertTokenizerFast.from_pretrained(str(d), **kw)


def hf_encode(tok, texts, max_length):
    if texts and isinstance(texts[0], tuple):
        enc = tok([a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=max_length)
    else:
        enc = tok(texts, truncation=True, max_length=max_length)
    return enc["input_ids"], enc["token_type_ids"]


@pytest.mark.parametrize("settings", [
    dict(do_lower_case=True),
    dict(do_lower_case=False),
    dict(do_lower_case=True, strip_accents=False),
    dict(do_lower_case=False, strip_accents=True),
    dict(do_lower_case=True, tokenize_chinese_chars=False),
])
def test_ids_match_transformers(tmp_path, settings):
    vocab = make_vocab(tmp_path / "vocab.txt", cased=not settings["do_lower_case"])
    ours = Tokenizer.from_vocab(vocab, **settings)
    ref = hf_tokenizer(vocab, **settings)
    for max_length in (512, 12):
        ids, types = ours.encode(SAMPLE, max_length)
        rids, rtypes = hf_encode(ref, SAMPLE, max_length)
        for i, text in enumerate(SAMPLE):
            assert ids[i] == rids[i], (text, settings, max_length)
            assert types[i] == rtypes[i]
    # the sample exercises unknown pieces, truncation and the special-token handling
    ids, _ = ours.encode(SAMPLE, 512)
    assert any(ours.unk_token_id in x for x in ids)
    assert ids[SAMPLE.index("")] == [ours.cls_token_id, ours.sep_token_id]


@pytest.mark.parametrize("max_length", [512, 24, 10, 5, 3])
def test_pairs_longest_first_truncation_match_transformers(tmp_path, max_length):
    vocab = make_vocab(tmp_path / "vocab.txt", cased=False)
    ours = Tokenizer.from_vocab(vocab, do_lower_case=True)
    ref = hf_tokenizer(vocab, do_lower_case=True)
    ids, types = ours.encode(PAIRS, max_length)
    rids, rtypes = hf_encode(ref, PAIRS, max_length)
    assert ids == rids
    assert types == rtypes
    for x, t in zip(ids, types):
        assert len(x) <= max_length
        assert x[0] == ours.cls_token_id and x[-1] == ours.sep_token_id
        assert set(t) <= {0, 1} and t == sorted(t)


def test_from_pretrained_vocab_txt_reads_lowercasing(tmp_path):
    d = tmp_path / "cased_model"
    d.mkdir()
    make_vocab(d / "vocab.txt", cased=True)
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "model_max_length": 64}))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 128}))
    ours = Tokenizer.from_pretrained(d)
    assert ours.do_lower_case is False and ours.model_max_length == 64
    ref = hf_tokenizer(d / "vocab.txt", do_lower_case=False)
    assert ours.encode(SAMPLE, 64).input_ids == hf_encode(ref, SAMPLE, 64)[0]
    # config.json alone decides when tokenizer_config.json is absent
    (d / "tokenizer_config.json").unlink()
    (d / "config.json").write_text(json.dumps({"do_lower_case": True}))
    assert Tokenizer.from_pretrained(d).do_lower_case is True


def test_from_pretrained_infers_lowercasing_from_vocab(tmp_path):
    for cased in (False, True):
        d = tmp_path / f"m{cased}"
        d.mkdir()
        make_vocab(d / "vocab.txt", cased=cased)
        assert Tokenizer.from_pretrained(d).do_lower_case is (not cased)


def test_from_pretrained_tokenizer_json_matches(tmp_path):
    vocab = make_vocab(tmp_path / "vocab.txt", cased=False)
    ref = hf_tokenizer(vocab, do_lower_case=True)
    d = tmp_path / "saved"
    ref.save_pretrained(str(d))
    (d / "vocab.txt").unlink(missing_ok=True)        # force the tokenizer.json path
    ours = Tokenizer.from_pretrained(d)
    assert ours.source.endswith("tokenizer.json")
    assert ours.do_lower_case is True
    assert ours.encode(SAMPLE, 40).input_ids == hf_encode(ref, SAMPLE, 40)[0]
    assert ours.encode(PAIRS, 16) == Tokenizer.from_vocab(vocab).encode(PAIRS, 16)
    # round trip through our own save_pretrained, loadable by transformers
    out = tmp_path / "ours"
    ours.save_pretrained(out)
    again = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_encode(again, SAMPLE, 40)[0] == ours.encode(SAMPLE, 40).input_ids


def test_encode_validates_input(tmp_path):
    tok = Tokenizer.from_vocab(make_vocab(tmp_path / "vocab.txt", cased=False))
    assert tok.encode("hello world").input_ids == tok.encode(["hello world"]).input_ids
    assert tok.encode(("a", "b")).token_type_ids[0] == [0, 0, 0, 1, 1]
    assert tok.encode([]) == ([], [])
    with pytest.raises(TypeError, match="example 1"):
        tok.encode(["ok", None])
    with pytest.raises(TypeError, match="pair"):
        tok.encode([("a", "b"), "c"])
    with pytest.raises(ValueError, match="max_length"):
        tok.encode([("a", "b")], max_length=2)
    assert tok.encode(["hello world"] * 3, 3).lengths.tolist() == [3, 3, 3]


def test_missing_files_and_empty_vocab(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        Tokenizer.from_pretrained(tmp_path)
