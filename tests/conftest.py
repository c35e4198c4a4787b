import os

import numpy as np
import pytest


def package_parent() -> str:
    """The folder holding the instantsoup under test (site-packages, or a checkout built in place):
    the working directory for a child ``python -c``, whose ``sys.path[0]`` is its cwd, so that it never
    imports a source tree without its compiled extension."""
    import instantsoup

    return os.path.dirname(os.path.dirname(os.path.abspath(instantsoup.__file__)))


def subprocess_env():
    """Environment for a child Python that must import the same instantsoup as this process.

    The package under test may be installed (CI) or built in place (a source checkout); a child
    started with cwd elsewhere finds it through PYTHONPATH either way, and never picks up a
    source tree without its compiled extension.
    """
    import instantsoup

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(instantsoup.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_report_header(config):
    try:
        import instantsoup

        info = instantsoup.build_info()
        return (f"instantsoup {info['instantsoup_version']} from {os.path.dirname(instantsoup.__file__)}; "
                f"BLAS {info['blas']} {info['blas_version']} core={info['blas_corename']}; "
                f"threads={info['num_threads']}")
    except Exception as e:  # pragma: no cover
        return f"instantsoup import failed: {e}"


# ---- shared fixtures of the method tests -----------------------------------------------------
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


def make_tiny_task(n_train=96, n_val=48, n_test=48, vocab=50, seed=0, pad_id=0):
    """A learnable toy task: label 1 iff the sequence has more 'high' tokens (>= vocab/2) than low."""
    from instantsoup.train import Split, TaskData, accuracy_metric

    rng = np.random.default_rng(seed)

    def split(n):
        ids, labels = [], []
        for _ in range(n):
            L = int(rng.integers(4, 12))
            x = rng.integers(1, vocab, size=L)
            ids.append(x.astype(np.int64))
            labels.append(int((x >= vocab // 2).sum() * 2 > L))
        return Split(ids, np.array(labels, np.int64), [np.zeros(len(x), np.int64) for x in ids])

    return TaskData("tiny", split(n_train), split(n_val), accuracy_metric, 2, test=split(n_test), pad_id=pad_id)


def build_tiny_bert(path, vocab_size=60, hidden=32, layers=2, heads=2, intermediate=64, num_labels=2, seed=0):
    """A randomly initialised BertForSequenceClassification + vocab.txt saved as an HF checkpoint dir."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=64,
                     num_labels=num_labels, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    BertForSequenceClassification(cfg).save_pretrained(str(path), safe_serialization=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab_size - 5)]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def make_model(tiny_bert_dir):
    """() -> a fresh tiny BERT (2 layers, hidden 32) loaded by the engine."""
    import instantsoup

    return lambda: instantsoup.load_model(str(tiny_bert_dir), num_labels=2, seed=0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and steadiest on shared cores) single-threaded."""
    import instantsoup

    prev = instantsoup.get_num_threads()
    instantsoup.set_num_threads(1)
    yield
    instantsoup.set_num_threads(prev)
