"""Datasets, tokenizers and batching."""

# --- vision (branch vision, issue 7) ---------------------------------------------------------
from instantsoup.data.clip_tokenizer import CLIPTokenizer  # noqa: E402,F401
from instantsoup.data.vision import (  # noqa: E402,F401
    ImageBatches,
    ImageDataset,
    ImageProcessor,
    check_pixel_values,
    load_vision_dataset,
)
# --- end vision ------------------------------------------------------------------------------
