"""Data: tokenization, GLUE and generic text tables, batching, and the real default model + task.

    from instantsoup import data
    tok = data.Tokenizer.from_pretrained(model_dir)
    train = data.load_glue("sst2", "glue_data", "train")          # or data.load_table(...)
    batches = data.Batches(tok.encode(train.texts, 128), train.labels, batch_size=32, seed=0)
    for batch, labels in batches.iter_steps(epochs=0.5): ...
    train, val, meta = data.default_task(); model_dir = data.default_model_path()
"""
from instantsoup.data.errors import DataError
from instantsoup.data.text import Encoded, TextDataset, Tokenizer
from instantsoup.data.metrics import accuracy, f1_score, matthews_corrcoef, pearson, spearman
from instantsoup.data.tables import load_table
from instantsoup.data.glue import GLUE_TASKS, load_glue
from instantsoup.data.batching import Batches
from instantsoup.data.default import (DefaultTask, MissingDemoPackage, default_model_info, default_model_path,
                                      default_task)

__all__ = ["DataError", "Encoded", "TextDataset", "Tokenizer", "accuracy", "f1_score", "matthews_corrcoef",
           "pearson", "spearman", "load_table", "GLUE_TASKS", "load_glue", "Batches", "DefaultTask",
           "MissingDemoPackage", "default_model_info", "default_model_path", "default_task"]

# --- vision (branch vision, issue 7) ---------------------------------------------------------
from instantsoup.data.clip_tokenizer import CLIPTokenizer  # noqa: E402
from instantsoup.data.vision import (DatasetFormatError, ImageBatches, ImageDataset,  # noqa: E402
                                     ImageDecodeError, ImageProcessor, check_pixel_values, load_vision_dataset)

__all__ += ["CLIPTokenizer", "DatasetFormatError", "ImageBatches", "ImageDataset", "ImageDecodeError",
            "ImageProcessor", "check_pixel_values", "load_vision_dataset"]
# --- end vision ------------------------------------------------------------------------------
