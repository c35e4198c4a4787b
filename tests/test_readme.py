"""The README's Python example runs as written (on a tiny generated checkpoint and SST-2 file)."""
import os
import re

import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _python_blocks():
    text = open(README, encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs(tiny_bert_dir, tmp_path):
    (code,) = [b for b in _python_blocks() if "isp.load_model" in b]
    glue = tmp_path / "SST-2"
    glue.mkdir()
    rows = ["sentence\tlabel"] + [f"{'good fine ' * (i % 3 + 1)}movie {i}\t{i % 2}" for i in range(40)]
    (glue / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code = code.replace('"path/to/hf-checkpoint"', repr(str(tiny_bert_dir)))
    code = code.replace('"glue_data/SST-2"', repr(str(glue)))
    code = code.replace('"mask.safetensors"', repr(str(tmp_path / "mask.safetensors")))
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert np.isfinite(scope["loss"])
    from safetensors.numpy import load_file

    saved = load_file(str(tmp_path / "mask.safetensors"))
    kept = sum(int(v.sum()) for v in saved.values())
    total = sum(v.size for v in saved.values())
    assert abs(1 - kept / total - 0.5) < 1e-6
    w = scope["model"].state_dict()["bert.encoder.layer.0.attention.self.query.weight"]
    assert (w[saved["bert.encoder.layer.0.attention.self.query.weight"] == 0] == 0).all()
