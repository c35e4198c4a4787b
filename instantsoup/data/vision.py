"""Images for CLIP: the preprocessing pipeline, vision datasets from their published on-disk
formats, zero-shot prompts, and a seeded, resumable batch iterator.

Pipeline (:class:`ImageProcessor`) — the same steps, in the same order and the same arithmetic, as
transformers' ``CLIPImageProcessor`` (its Pillow backend), so a checkpoint sees the pixels it was
trained with:

1. convert to RGB (transparency composited onto white),
2. resize the shortest side to ``size`` with Pillow (bicubic by default; the long side is
   ``int(size * long / short)``),
3. centre crop to ``crop_size`` (zero padding if the image is smaller),
4. rescale by 1/255 (float64 product, cast to float32),
5. normalise per channel with CLIP's mean and standard deviation (float32),

giving ``pixel_values`` of shape (3, H, W) float32 per image. Its settings come from the checkpoint's
``preprocessor_config.json`` when present.

Datasets (:func:`load_vision_dataset` and the ``load_*`` functions) return an :class:`ImageDataset`:
uint8 images in memory (N, H, W) or (N, H, W, 3) — or lazily decoded file paths for image folders —
int64 labels (N,), class names and the dataset's zero-shot templates.

Batches (:class:`ImageBatches`) yield ``({"pixel_values": (B, 3, H, W) float32}, labels (B,) int64)``
with a seeded shuffle per epoch, random access by global step (so a run resumes at any step) and
seeded random subsets.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from instantsoup.data.epochs import EpochSizes
from instantsoup.data.errors import DataError
from instantsoup.data.vision_prompts import CLASSNAMES, TEMPLATES, templates_for

logger = logging.getLogger(__name__)

__all__ = [
    "is_vision_task",
    "CLIP_MEAN",
    "CLIP_STD",
    "ImageProcessor",
    "ImageDataset",
    "ImageBatches",
    "ImageSplit",
    "DatasetFormatError",
    "ImageDecodeError",
    "check_pixel_values",
    "load_vision_dataset",
    "load_cifar10",
    "load_cifar100",
    "load_mnist",
    "load_fashion_mnist",
    "load_svhn",
    "load_image_folder",
    "load_gtsrb",
    "load_stanford_cars",
    "read_idx",
    "templates_for",
    "TEMPLATES",
    "CLASSNAMES",
    "VISION_DATASETS",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DatasetFormatError(DataError):
    """A dataset file is truncated or does not have the layout of its published format (the
    message names the file). A :class:`instantsoup.data.DataError`, hence a ValueError."""

    def __init__(self, message: str, path: str | None = None):
        ValueError.__init__(self, message)
        self.path, self.line, self.row, self.reason = path, None, None, message


class ImageDecodeError(DatasetFormatError):
    """An image file could not be decoded (the message names the file)."""


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow is a dependency of the vision path
        raise ImportError("instantsoup's image pipeline needs Pillow: pip install pillow") from e
    return Image


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------

def _hw(value: Any, what: str) -> tuple[int, int]:
    """A crop size from a preprocessor config: int, {"height","width"} or {"shortest_edge"}."""
    if isinstance(value, Mapping):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
        raise ValueError(f"{what}: expected keys height/width, got {sorted(value)}")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    raise ValueError(f"{what}: expected an int or a height/width mapping, got {value!r}")


@dataclass
class ImageProcessor:
    """CLIP's image preprocessing (equal to transformers' ``CLIPImageProcessor``).

    Attributes mirror ``preprocessor_config.json``: ``shortest_edge`` (resize target of the
    shortest side; or ``resize_hw`` = (height, width) for a fixed-size resize), ``crop_size``
    (height, width), ``resample`` (a Pillow filter id; 3 = bicubic), ``rescale_factor``,
    ``image_mean``/``image_std`` (per RGB channel) and the ``do_*`` switches.

    Call it on one image or a sequence of images (PIL images, uint8 arrays (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4) channels-last, or file paths) to get float32 pixel values
    (B, 3, crop_h, crop_w).
    """

    shortest_edge: int | None = 224
    resize_hw: tuple[int, int] | None = None
    crop_size: tuple[int, int] = (224, 224)
    resample: int = 3
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    do_convert_rgb: bool = True

    def __post_init__(self) -> None:
        if self.do_resize and self.shortest_edge is None and self.resize_hw is None:
            raise ValueError("ImageProcessor: do_resize needs shortest_edge or resize_hw")
        if self.shortest_edge is not None and self.shortest_edge <= 0:
            raise ValueError(f"ImageProcessor: shortest_edge must be positive, got {self.shortest_edge}")
        self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
        if min(self.crop_size) <= 0:
            raise ValueError(f"ImageProcessor: crop_size must be positive, got {self.crop_size}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("ImageProcessor: image_mean and image_std need 3 values (R, G, B)")
        if any(s == 0 for s in self.image_std):
            raise ValueError("ImageProcessor: image_std must be non-zero")
        self.resample = int(self.resample)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], image_size: int | None = None) -> "ImageProcessor":
        """From a ``preprocessor_config.json`` dict (HF keys). ``image_size`` fills missing sizes."""
        kw: dict[str, Any] = {}
        size = cfg.get("size", image_size if image_size is not None else 224)
        if isinstance(size, Mapping) and "shortest_edge" in size:
            if "longest_edge" in size and size["longest_edge"] is not None:
                raise ValueError("ImageProcessor: size with longest_edge is not supported (CLIP uses shortest_edge)")
            kw["shortest_edge"], kw["resize_hw"] = int(size["shortest_edge"]), None
        elif isinstance(size, Mapping) or isinstance(size, (list, tuple)):
            kw["shortest_edge"], kw["resize_hw"] = None, _hw(size, "size")
        elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            # an int size means the shortest edge for CLIP (default_to_square=False)
            kw["shortest_edge"], kw["resize_hw"] = int(size), None
        else:
            raise ValueError(f"ImageProcessor: unsupported size {size!r}")
        crop = cfg.get("crop_size", image_size if image_size is not None else kw.get("shortest_edge") or 224)
        kw["crop_size"] = _hw(crop, "crop_size")
        if "resample" in cfg:
            kw["resample"] = int(cfg["resample"])
        if "rescale_factor" in cfg:
            kw["rescale_factor"] = float(cfg["rescale_factor"])
        for key in ("image_mean", "image_std"):
            if key in cfg and cfg[key] is not None:
                v = cfg[key]
                v = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
                kw[key] = tuple(v)
        for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
            if key in cfg and cfg[key] is not None:
                kw[key] = bool(cfg[key])
        return cls(**kw)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ImageProcessor":
        """From a checkpoint directory: its ``preprocessor_config.json`` when present, else CLIP's
        defaults at the vision tower's ``image_size`` from ``config.json``."""
        path = os.fspath(path)
        pre = os.path.join(path, "preprocessor_config.json")
        image_size = None
        cfg_path = os.path.join(path, "config.json")
        if os.path.isfile(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
            vc = cfg.get("vision_config", cfg)
            if isinstance(vc, Mapping) and "image_size" in vc:
                image_size = int(vc["image_size"])
        if os.path.isfile(pre):
            with open(pre, encoding="utf-8") as f:
                pcfg = json.load(f)
            proc = cls.from_config(pcfg, image_size=image_size)
            if image_size is not None and proc.crop_size != (image_size, image_size):
                logger.warning("preprocessor crop_size %s differs from the model's image_size %d",
                               proc.crop_size, image_size)
            return proc
        if image_size is None:
            raise FileNotFoundError(
                f"{path}: neither preprocessor_config.json nor a config.json with image_size")
        return cls(shortest_edge=image_size, crop_size=(image_size, image_size))

    def to_config(self) -> dict:
        """The HF ``preprocessor_config.json`` dict of this pipeline."""
        size = ({"shortest_edge": self.shortest_edge} if self.resize_hw is None
                else {"height": self.resize_hw[0], "width": self.resize_hw[1]})
        return {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": self.do_resize, "size": size, "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": {"height": self.crop_size[0], "width": self.crop_size[1]},
            "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize, "image_mean": list(self.image_mean),
            "image_std": list(self.image_std), "do_convert_rgb": self.do_convert_rgb,
        }

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``preprocessor_config.json`` into ``path``."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "preprocessor_config.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_config(), f, indent=2)

    # -- the steps -------------------------------------------------------------------------------
    def _to_pil_rgb(self, image: Any, where: str):
        """Any accepted image -> PIL image in RGB (or its own mode when do_convert_rgb is off)."""
        Image = _pil()
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image)
            where = os.fspath(image.filename) if getattr(image, "filename", "") else where
        if isinstance(image, Image.Image):
            if not self.do_convert_rgb:
                if image.mode != "RGB":
                    raise ValueError(f"{where}: image mode {image.mode!r}, expected RGB "
                                     "(do_convert_rgb is off in the preprocessor config)")
                return image
            if "A" in image.getbands() or image.info.get("transparency") is not None:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return image.convert("RGB")
        if isinstance(image, np.ndarray):
            return Image.fromarray(_array_to_rgb(image, where, self.do_convert_rgb))
        raise TypeError(f"{where}: expected a PIL image, a uint8 array (H, W[, C]) or a file path, "
                        f"got {type(image).__name__}")

    def _resize(self, img):
        w, h = img.size
        if self.resize_hw is not None:
            nh, nw = self.resize_hw
        else:
            s = self.shortest_edge
            if w <= h:
                nw, nh = s, int(s * h / w)
            else:
                nh, nw = s, int(s * w / h)
        return img.resize((nw, nh), resample=self.resample)

    def _center_crop(self, arr: np.ndarray) -> np.ndarray:
        """arr is (H, W, C); zero-pads when smaller than the crop."""
        H, W = arr.shape[:2]
        ch, cw = self.crop_size
        if H >= ch and W >= cw:
            top, left = (H - ch) // 2, (W - cw) // 2
            return arr[top:top + ch, left:left + cw]
        nh, nw = max(ch, H), max(cw, W)
        pt, pl = math.ceil((nh - H) / 2), math.ceil((nw - W) / 2)
        padded = np.zeros((nh, nw) + arr.shape[2:], dtype=arr.dtype)
        padded[pt:pt + H, pl:pl + W] = arr
        top, left = (H - ch) // 2 + pt, (W - cw) // 2 + pl
        return padded[max(0, top):min(nh, top + ch), max(0, left):min(nw, left + cw)]

    def process(self, image: Any, where: str = "image") -> np.ndarray:
        """One image -> (3, crop_h, crop_w) float32 (or the pipeline's dtype if steps are off)."""
        img = self._to_pil_rgb(image, where)
        if self.do_resize:
            img = self._resize(img)
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.do_center_crop:
            arr = self._center_crop(arr)
        if arr.dtype == np.uint8 and self.do_rescale and self.do_normalize and arr.shape[2] == 3:
            # rescale + normalise is a function of the byte value: a per-channel table gives the
            # same float32 numbers as the arithmetic below, several times faster
            lut = self._lut()
            out = np.empty((3,) + arr.shape[:2], dtype=np.float32)
            for c in range(3):
                np.take(lut[c], arr[:, :, c], out=out[c])
            return out
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
        if self.do_rescale:
            chw = (chw.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            if chw.shape[0] != 3:
                raise ValueError(f"{where}: {chw.shape[0]} channels, normalisation needs 3 (RGB)")
            x = chw if np.issubdtype(chw.dtype, np.floating) else chw.astype(np.float32)
            mean = np.asarray(self.image_mean, dtype=x.dtype)[:, None, None]
            std = np.asarray(self.image_std, dtype=x.dtype)[:, None, None]
            chw = (x - mean) / std
        return chw

    def _lut(self) -> np.ndarray:
        """(3, 256) float32: pixel byte value -> normalised value per channel."""
        key = (self.rescale_factor, tuple(self.image_mean), tuple(self.image_std))
        cached = getattr(self, "_lut_cache", None)
        if cached is None or cached[0] != key:
            x = (np.arange(256, dtype=np.float64) * self.rescale_factor).astype(np.float32)
            mean = np.asarray(self.image_mean, dtype=np.float32)[:, None]
            std = np.asarray(self.image_std, dtype=np.float32)[:, None]
            cached = (key, np.ascontiguousarray((x[None, :] - mean) / std))
            self._lut_cache = cached
        return cached[1]

    def __call__(self, images: Any) -> np.ndarray:
        """One image or a sequence of images -> pixel values (B, 3, H, W) float32."""
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4:
            seq: Sequence[Any] = list(images)
        elif isinstance(images, (list, tuple)):
            seq = images
        else:
            seq = [images]
        if len(seq) == 0:
            raise ValueError("ImageProcessor: no images")
        out = np.empty((len(seq), 3) + self.crop_size, dtype=np.float32)
        for i, im in enumerate(seq):
            px = self.process(im, where=f"image {i}")
            if px.shape != out.shape[1:]:
                raise ValueError(f"image {i}: processed to {px.shape}, expected {out.shape[1:]} "
                                 "(enable do_resize/do_center_crop or pass images of that size)")
            out[i] = px
        return out

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the pixel values this pipeline produces."""
        return self.crop_size


def _array_to_rgb(arr: np.ndarray, where: str, convert: bool = True) -> np.ndarray:
    """A channels-last uint8 image array -> (H, W, 3) uint8, as CLIPImageProcessor converts arrays
    (grey repeated; alpha composited onto white in float64, rounded)."""
    if arr.dtype != np.uint8:
        raise TypeError(f"{where}: image arrays must be uint8 (H, W[, C]) in 0..255, got {arr.dtype}; "
                        "pass already-normalised float pixel values straight to the model instead")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{where}: image array of shape {arr.shape}; expected (H, W), (H, W, 1), "
                         "(H, W, 3) or (H, W, 4) channels-last")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {arr.shape}")
    c = arr.shape[2]
    if c == 3:
        return arr
    if not convert:
        raise ValueError(f"{where}: {c}-channel image, expected RGB (do_convert_rgb is off)")
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    alpha = arr[:, :, 3:4] / 255
    comp = alpha * arr[:, :, :3] + (1 - alpha) * 255
    return np.round(comp).astype(np.uint8)


def open_image(path: str | os.PathLike):
    """Open and fully decode an image file with Pillow; errors name the file."""
    Image = _pil()
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            im.load()
            im.filename = path  # keep the name for later messages
            return im
    except FileNotFoundError:
        raise
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError...
        raise ImageDecodeError(f"cannot decode image file {path}: {e}", path) from e


def is_vision_task(name: str) -> bool:
    """Is ``name`` an image task (a dataset of VISION_DATASETS, e.g. "cifar10" or "image_folder")?"""
    return name.lower().replace("-", "_") in VISION_DATASETS


def check_pixel_values(pixel_values: Any, image_size: int | tuple[int, int] | None = None,
                       name: str = "pixel_values") -> np.ndarray:
    """Validate model input: a float32 C-contiguous array (B, 3, H, W), finite, H×W = image_size.

    Returns the array (unchanged). Raises TypeError for non-arrays / non-float32 dtypes and
    ValueError for wrong shapes, channel counts, sizes or non-finite values.
    """
    if not isinstance(pixel_values, np.ndarray):
        raise TypeError(f"{name}: expected a numpy float32 array (B, 3, H, W), got {type(pixel_values).__name__}")
    if pixel_values.dtype != np.float32:
        hint = (" — raw uint8 pixels? run them through instantsoup.data.vision.ImageProcessor first"
                if np.issubdtype(pixel_values.dtype, np.integer) else "")
        raise TypeError(f"{name}: expected float32, got {pixel_values.dtype}{hint}")
    if pixel_values.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions (B, 3, H, W), got shape {pixel_values.shape}")
    if pixel_values.shape[1] != 3:
        raise ValueError(f"{name}: expected 3 channels (B, 3, H, W), got shape {pixel_values.shape}"
                         + (" (channels-last? transpose to (B, 3, H, W))" if pixel_values.shape[3] == 3 else ""))
    if pixel_values.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")
    if image_size is not None:
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if tuple(pixel_values.shape[2:]) != hw:
            raise ValueError(f"{name}: images are {pixel_values.shape[2]}x{pixel_values.shape[3]}, "
                             f"the model expects {hw[0]}x{hw[1]} (shape {pixel_values.shape})")
    if not np.isfinite(pixel_values).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return pixel_values


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------

@dataclass
class ImageDataset:
    """An image classification dataset.

    images: uint8 array (N, H, W) or (N, H, W, 3) in memory, or a list of N file paths (decoded
    lazily). labels: int64 (N,). classnames: names in label order (used for zero-shot prompts).
    templates: zero-shot prompt templates with one ``{}``.
    """

    images: np.ndarray | list[str]
    labels: np.ndarray
    classnames: list[str]
    templates: list[str] = field(default_factory=lambda: templates_for(None))
    name: str = "images"
    split: str = "train"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if self.labels.ndim != 1 or not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(f"{self.name}: labels must be a 1-D integer array, got {self.labels.dtype} {self.labels.shape}")
        self.labels = self.labels.astype(np.int64, copy=False)
        if isinstance(self.images, np.ndarray):
            if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4) or (
                    self.images.ndim == 4 and self.images.shape[3] not in (1, 3, 4)):
                raise ValueError(f"{self.name}: images must be uint8 (N, H, W) or (N, H, W, C) with C in 1/3/4, "
                                 f"got {self.images.dtype} {self.images.shape}")
        else:
            self.images = [os.fspath(p) for p in self.images]
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classnames)):
            raise ValueError(f"{self.name}: labels span {self.labels.min()}..{self.labels.max()} "
                             f"but there are {len(self.classnames)} classes")
        self.classnames = [str(c) for c in self.classnames]
        for t in self.templates:
            if t.count("{}") != 1:
                raise ValueError(f"{self.name}: template {t!r} must contain exactly one '{{}}'")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def lazy(self) -> bool:
        """True when images are file paths decoded on access."""
        return not isinstance(self.images, np.ndarray)

    def image(self, i: int):
        """Image i: a uint8 array (H, W[, C]) or a decoded PIL image (lazy datasets)."""
        if self.lazy:
            return open_image(self.images[i])
        return self.images[i]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        """The dataset restricted to ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        imgs = self.images[idx] if not self.lazy else [self.images[i] for i in idx]
        return ImageDataset(imgs, self.labels[idx], list(self.classnames), list(self.templates),
                            self.name, self.split)

    def prompts(self) -> list[list[str]]:
        """For each class, its templates filled with the class name."""
        return [[t.format(c) for t in self.templates] for c in self.classnames]

    def metric(self, preds: np.ndarray) -> dict:
        """{"accuracy": fraction} of predicted class ids (N,) or logits (N, num_classes)."""
        p = np.asarray(preds)
        if p.ndim == 2:
            p = p.argmax(axis=1)
        if p.shape != self.labels.shape:
            raise ValueError(f"{self.name}: {p.shape[0] if p.ndim else 0} predictions for {len(self)} examples")
        return {"accuracy": float((p == self.labels).mean()) if len(p) else float("nan")}

    def __repr__(self) -> str:
        kind = "paths" if self.lazy else f"uint8{tuple(self.images.shape)}"
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, images={kind})")


# -- restricted unpickling for CIFAR (the python version is a pickle of dicts of numpy arrays) -----

def _np_core():
    return getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1


_ALLOWED_PICKLE = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytearray"), ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a dataset file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_PICKLE:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (not a numpy array)")
        if module.startswith("numpy.core.") or module.startswith("numpy._core."):
            sub = module.split(".", 2)[2]
            return getattr(getattr(_np_core(), sub), name)
        if module in ("copy_reg", "copyreg"):
            import copyreg
            return getattr(copyreg, name)
        if module == "_codecs":
            import codecs
            return codecs.encode
        if module in ("__builtin__", "builtins"):
            import builtins
            return getattr(builtins, name)
        return getattr(np, name)


def _load_pickle(data: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DatasetFormatError(f"{where}: not a readable CIFAR pickle batch ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _decode_names(names: Sequence[Any]) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


class _CifarSource:
    """Reads members of a CIFAR directory or its .tar.gz archive."""

    def __init__(self, root: str, dirname: str, archive: str):
        root = os.fspath(root)
        self.tar = None
        self.dir = None
        if os.path.isfile(root) and tarfile.is_tarfile(root):
            self.tar = root
        else:
            for cand in (root, os.path.join(root, dirname)):
                if os.path.isdir(cand) and os.path.exists(os.path.join(cand, "meta" if "100" in dirname else "batches.meta")):
                    self.dir = cand
                    break
            if self.dir is None and os.path.isfile(os.path.join(root, archive)):
                self.tar = os.path.join(root, archive)
        if self.dir is None and self.tar is None:
            raise FileNotFoundError(f"{root}: no {dirname}/ directory (with its meta file) or {archive}")
        self.dirname = dirname
        self._members: dict[str, Any] | None = None

    def read(self, name: str) -> tuple[bytes, str]:
        if self.dir is not None:
            p = os.path.join(self.dir, name)
            if not os.path.isfile(p):
                raise FileNotFoundError(f"missing CIFAR file {p}")
            with open(p, "rb") as f:
                return f.read(), p
        with tarfile.open(self.tar, "r:*") as tf:
            member = None
            for m in tf.getmembers():
                if m.isfile() and os.path.basename(m.name) == name and os.path.dirname(m.name).endswith(self.dirname):
                    member = m
                    break
            if member is None:
                raise FileNotFoundError(f"{self.tar}: no member {self.dirname}/{name}")
            fh = tf.extractfile(member)
            return fh.read(), f"{self.tar}:{member.name}"


def _cifar_arrays(d: dict, where: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d or label_key not in d:
        raise DatasetFormatError(f"{where}: missing key {'data' if 'data' not in d else label_key!r} "
                                 f"(keys: {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFormatError(f"{where}: data must be uint8 (N, 3072), got {data.dtype} {data.shape} "
                                 "(truncated or not a CIFAR batch)")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DatasetFormatError(f"{where}: {data.shape[0]} images but {labels.shape} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def load_cifar10(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """CIFAR-10, python version: ``root`` is ``cifar-10-batches-py/`` (data_batch_1..5, test_batch,
    batches.meta), its parent, or ``cifar-10-python.tar.gz``. Images (N, 32, 32, 3) uint8."""
    if split not in ("train", "test"):
        raise ValueError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    src = _CifarSource(os.fspath(root), "cifar-10-batches-py", "cifar-10-python.tar.gz")
    meta_raw, where = src.read("batches.meta")
    meta = _load_pickle(meta_raw, where)
    if "label_names" not in meta:
        raise DatasetFormatError(f"{where}: no label_names")
    classnames = _decode_names(meta["label_names"])
    if len(classnames) != 10:
        raise DatasetFormatError(f"{where}: {len(classnames)} label names, expected 10")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    imgs, labs = [], []
    for name in files:
        raw, where = src.read(name)
        x, y = _cifar_arrays(_load_pickle(raw, where), where, "labels")
        imgs.append(x)
        labs.append(y)
    return ImageDataset(np.concatenate(imgs), np.concatenate(labs), classnames,
                        templates_for("cifar10"), "cifar10", split)


def load_cifar100(root: str | os.PathLike, split: str = "train", label: str = "fine") -> ImageDataset:
    """CIFAR-100, python version: ``root`` is ``cifar-100-python/`` (train, test, meta), its parent,
    or ``cifar-100-python.tar.gz``. ``label`` = "fine" (100 classes) or "coarse" (20 superclasses).
    Class names come from the meta file, underscores replaced by spaces."""
    if split not in ("train", "test"):
        raise ValueError(f"cifar100: split must be 'train' or 'test', got {split!r}")
    if label not in ("fine", "coarse"):
        raise ValueError(f"cifar100: label must be 'fine' or 'coarse', got {label!r}")
    src = _CifarSource(os.fspath(root), "cifar-100-python", "cifar-100-python.tar.gz")
    meta_raw, where = src.read("meta")
    meta = _load_pickle(meta_raw, where)
    key = f"{label}_label_names"
    if key not in meta:
        raise DatasetFormatError(f"{where}: no {key}")
    classnames = [n.replace("_", " ") for n in _decode_names(meta[key])]
    raw, where = src.read(split)
    x, y = _cifar_arrays(_load_pickle(raw, where), where, f"{label}_labels")
    name = "cifar100" if label == "fine" else "cifar100_coarse"
    return ImageDataset(x, y, classnames, templates_for("cifar100"), name, split)


# -- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not, detected from its bytes) -> array in native byte order."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetFormatError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(raw) < head:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    need = head + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != need:
        raise DatasetFormatError(f"{path}: IDX header says shape {dims} ({need} bytes) but the file has "
                                 f"{len(raw)} bytes ({'truncated' if len(raw) < need else 'trailing data'})")
    arr = np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_file(root: str, stems: Sequence[str], subdirs: Sequence[str]) -> str:
    tried = []
    for sub in subdirs:
        for stem in stems:
            for ext in ("", ".gz"):
                p = os.path.join(root, sub, stem + ext)
                tried.append(p)
                if os.path.isfile(p):
                    return p
    raise FileNotFoundError(f"none of these files exist: {', '.join(tried[:6])}{' ...' if len(tried) > 6 else ''}")


def load_mnist(root: str | os.PathLike, split: str = "train", variant: str = "mnist") -> ImageDataset:
    """MNIST / Fashion-MNIST from the IDX files (``train-images-idx3-ubyte[.gz]``,
    ``train-labels-idx1-ubyte[.gz]``, ``t10k-*``) in ``root``, ``root/raw`` or torchvision's
    ``root/MNIST/raw`` / ``root/FashionMNIST/raw``. Images (N, 28, 28) uint8 (grey)."""
    if split not in ("train", "test"):
        raise ValueError(f"{variant}: split must be 'train' or 'test', got {split!r}")
    if variant not in ("mnist", "fashion_mnist"):
        raise ValueError(f"variant must be 'mnist' or 'fashion_mnist', got {variant!r}")
    root = os.fspath(root)
    prefix = "train" if split == "train" else "t10k"
    sub = ["", "raw", "MNIST/raw" if variant == "mnist" else "FashionMNIST/raw"]
    ip = _find_file(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"], sub)
    lp = _find_file(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"], sub)
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetFormatError(f"{ip}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DatasetFormatError(f"{lp}: expected labels (N,), got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(f"{ip} has {images.shape[0]} images but {lp} has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"{lp}: label {int(labels.max())} out of range 0..9")
    return ImageDataset(images, labels.astype(np.int64), list(CLASSNAMES[variant]),
                        templates_for(variant), variant, split)


def load_fashion_mnist(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """Fashion-MNIST (same IDX layout as MNIST); see :func:`load_mnist`."""
    return load_mnist(root, split, variant="fashion_mnist")


# -- SVHN cropped digits -------------------------------------------------------------------------

def _loadmat(path: str) -> dict:
    try:
        import scipy.io
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading .mat files needs scipy: pip install scipy") from e
    try:
        return scipy.io.loadmat(path)
    except Exception as e:
        raise DatasetFormatError(f"{path}: not a readable MATLAB file ({e})") from e


def load_svhn(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """SVHN cropped digits: ``root/{train,test,extra}_32x32.mat`` (or ``root`` the .mat file itself)
    with X (32, 32, 3, N) uint8 and y (N, 1) in 1..10, where 10 is the digit 0 (mapped to 0)."""
    if split not in ("train", "test", "extra"):
        raise ValueError(f"svhn: split must be 'train', 'test' or 'extra', got {split!r}")
    root = os.fspath(root)
    path = root if os.path.isfile(root) else os.path.join(root, f"{split}_32x32.mat")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing SVHN file {path}")
    m = _loadmat(path)
    if "X" not in m or "y" not in m:
        raise DatasetFormatError(f"{path}: expected variables X and y, found {sorted(k for k in m if not k.startswith('__'))}")
    X, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1)
    if X.ndim != 4 or X.shape[2] != 3 or X.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: X must be uint8 (32, 32, 3, N), got {X.dtype} {X.shape}")
    if y.shape[0] != X.shape[3]:
        raise DatasetFormatError(f"{path}: {X.shape[3]} images but {y.shape[0]} labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DatasetFormatError(f"{path}: labels span {y.min()}..{y.max()}, expected 1..10")
    y[y == 10] = 0
    images = np.ascontiguousarray(X.transpose(3, 0, 1, 2))
    return ImageDataset(images, y, list(CLASSNAMES["svhn"]), templates_for("svhn"), "svhn", split)


# -- image folders -------------------------------------------------------------------------------

def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _split_dir(root: str, split: str | None, aliases: Sequence[str] = ()) -> str:
    if split is None:
        return root
    for cand in (split, *aliases):
        p = os.path.join(root, cand)
        if os.path.isdir(p):
            return p
    raise FileNotFoundError(f"{root}: no '{split}' sub-folder"
                            + (f" (also tried {', '.join(aliases)})" if aliases else ""))


def load_image_folder(root: str | os.PathLike, split: str | None = None, classnames: Sequence[str] | None = None,
                      templates: Sequence[str] | None = None, name: str | None = None,
                      class_dirs: Sequence[str] | None = None) -> ImageDataset:
    """Images in one sub-folder per class (``root[/split]/<class>/<image>``), sorted by folder name.

    The label of a class is its index among the sorted class folders (or in ``class_dirs``).
    Class names default to the folder names with ``_`` replaced by spaces; pass ``classnames``
    (same length, in label order) for datasets whose folders are ids. Images are decoded lazily.
    """
    base = _split_dir(os.fspath(root), split)
    if class_dirs is None:
        class_dirs = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)) and not d.startswith("."))
    if not class_dirs:
        raise DatasetFormatError(f"{base}: no class sub-folders")
    paths: list[str] = []
    labels: list[int] = []
    for k, d in enumerate(class_dirs):
        cdir = os.path.join(base, d)
        if not os.path.isdir(cdir):
            raise FileNotFoundError(f"missing class folder {cdir}")
        files = sorted(f for f in os.listdir(cdir) if _is_image(f))
        paths.extend(os.path.join(cdir, f) for f in files)
        labels.extend([k] * len(files))
    if not paths:
        raise DatasetFormatError(f"{base}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders")
    if classnames is None:
        classnames = [d.replace("_", " ") for d in class_dirs]
    elif len(classnames) != len(class_dirs):
        raise DatasetFormatError(f"{base}: {len(class_dirs)} class folders but {len(classnames)} class names")
    name = name or os.path.basename(os.path.normpath(os.fspath(root)))
    tmpl = list(templates) if templates is not None else templates_for(name)
    return ImageDataset(paths, np.asarray(labels, dtype=np.int64), list(classnames), tmpl, name, split or "all")


def load_gtsrb(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """GTSRB (43 traffic-sign classes). Accepted layouts:

    - class folders 00000..00042 under ``root/<split>``, ``root/Training`` (train) or the official
      ``root/[GTSRB/]Final_Training/Images``;
    - the official test set: a flat folder of images plus ``GT-final_test.csv`` (``;``-separated,
      columns Filename ... ClassId) under ``root/[GTSRB/]Final_Test/Images`` or ``root/test``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"gtsrb: split must be 'train' or 'test', got {split!r}")
    root = os.fspath(root)
    names = CLASSNAMES["gtsrb"]
    if split == "train":
        cands = ["train", "Training", "Final_Training/Images", "GTSRB/Training", "GTSRB/Final_Training/Images"]
    else:
        cands = ["test", "Test", "Final_Test/Images", "GTSRB/Final_Test/Images", "GTSRB/Test"]
    for c in cands:
        d = os.path.join(root, c)
        if not os.path.isdir(d):
            continue
        subdirs = sorted(x for x in os.listdir(d) if os.path.isdir(os.path.join(d, x)))
        if subdirs:
            if len(subdirs) != 43 or any(not s.isdigit() for s in subdirs):
                raise DatasetFormatError(f"{d}: expected 43 class folders 00000..00042, found {len(subdirs)}")
            subdirs.sort(key=int)
            ds = load_image_folder(d, None, names, templates_for("gtsrb"), "gtsrb", class_dirs=subdirs)
            ds.split = split
            return ds
        return _gtsrb_csv(d, root, names, split)
    raise FileNotFoundError(f"{root}: no GTSRB {split} folder (tried {', '.join(cands)})")


def _gtsrb_csv(d: str, root: str, names: list[str], split: str) -> ImageDataset:
    csvs = [os.path.join(d, f) for f in os.listdir(d) if f.lower().startswith("gt") and f.lower().endswith(".csv")]
    csvs += [os.path.join(root, f) for f in ("GT-final_test.csv",) if os.path.isfile(os.path.join(root, f))]
    if not csvs:
        raise DatasetFormatError(f"{d}: no class folders and no GT-*.csv annotation file")
    import csv
    path = csvs[0]
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if not rows or "Filename" not in rows[0] or "ClassId" not in rows[0]:
        raise DatasetFormatError(f"{path}: expected a ';'-separated header with Filename and ClassId")
    fi, ci = rows[0].index("Filename"), rows[0].index("ClassId")
    paths, labels = [], []
    for ln, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        if len(r) <= max(fi, ci):
            raise DatasetFormatError(f"{path}:{ln}: {len(r)} fields, header has {len(rows[0])}")
        try:
            labels.append(int(r[ci]))
        except ValueError as e:
            raise DatasetFormatError(f"{path}:{ln}: ClassId {r[ci]!r} is not an integer") from e
        paths.append(os.path.join(d, r[fi]))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} missing image(s), e.g. {missing[0]}")
    return ImageDataset(paths, np.asarray(labels, dtype=np.int64), names, templates_for("gtsrb"), "gtsrb", split)


def load_stanford_cars(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """Stanford Cars (196 classes). Either class folders named by car (``root/<split>/<class>/``),
    or the original devkit layout: ``root/cars_{train,test}/*.jpg`` with ``root/devkit/cars_meta.mat``
    and ``cars_train_annos.mat`` / ``cars_test_annos_withlabels.mat`` (1-based classes)."""
    if split not in ("train", "test"):
        raise ValueError(f"stanford_cars: split must be 'train' or 'test', got {split!r}")
    root = os.fspath(root)
    meta = os.path.join(root, "devkit", "cars_meta.mat")
    if not os.path.isfile(meta):
        return load_image_folder(root, split, None, templates_for("stanford_cars"), "stanford_cars")
    names = [str(np.asarray(n).reshape(-1)[0]) for n in _loadmat(meta)["class_names"].reshape(-1)]
    ann_name = "cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
    ann = None
    for p in (os.path.join(root, "devkit", ann_name), os.path.join(root, ann_name)):
        if os.path.isfile(p):
            ann = p
            break
    if ann is None:
        raise FileNotFoundError(f"{root}: missing {ann_name} (in devkit/ or the root)")
    rec = _loadmat(ann).get("annotations")
    if rec is None or rec.dtype.names is None or not {"fname", "class"} <= set(rec.dtype.names):
        raise DatasetFormatError(f"{ann}: expected an 'annotations' struct with fname and class")
    rec = rec.reshape(-1)
    img_dir = os.path.join(root, f"cars_{split}")
    paths = [os.path.join(img_dir, str(np.asarray(r["fname"]).reshape(-1)[0])) for r in rec]
    labels = np.array([int(np.asarray(r["class"]).reshape(-1)[0]) - 1 for r in rec], dtype=np.int64)
    return ImageDataset(paths, labels, names, templates_for("stanford_cars"), "stanford_cars", split)


_EUROSAT_DIRS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                 "PermanentCrop", "Residential", "River", "SeaLake"]


def _load_eurosat(root: str, split: str | None = None) -> ImageDataset:
    base = os.fspath(root)
    if split is not None and os.path.isdir(os.path.join(base, split)):
        base = os.path.join(base, split)
    for sub in ("", "2750", "EuroSAT_RGB", "eurosat/2750"):
        d = os.path.join(base, sub)
        if all(os.path.isdir(os.path.join(d, c)) for c in _EUROSAT_DIRS):
            ds = load_image_folder(d, None, CLASSNAMES["eurosat"], templates_for("eurosat"), "eurosat",
                                   class_dirs=_EUROSAT_DIRS)
            ds.split = split or "all"
            return ds
    raise FileNotFoundError(f"{root}: no EuroSAT class folders ({', '.join(_EUROSAT_DIRS)})")


VISION_DATASETS = ("cifar10", "cifar100", "cifar100_coarse", "mnist", "fashion_mnist", "svhn", "gtsrb",
                   "stanford_cars", "eurosat", "dtd", "resisc45", "sun397", "image_folder")


def load_vision_dataset(name: str, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> ImageDataset:
    """Load dataset ``name`` (one of :data:`VISION_DATASETS`) from ``root`` in its published layout.

    Datasets without a dedicated reader (dtd, resisc45, sun397, image_folder) are class-per-folder
    trees ``root/<split>/<class>/``; their templates are CLIP's for that dataset.
    """
    key = name.lower().replace("-", "_")
    root = os.fspath(root)
    if key == "cifar10":
        return load_cifar10(root, split)
    if key == "cifar100":
        return load_cifar100(root, split, kwargs.get("label", "fine"))
    if key == "cifar100_coarse":
        return load_cifar100(root, split, "coarse")
    if key in ("mnist", "fashion_mnist"):
        return load_mnist(root, split, key)
    if key == "svhn":
        return load_svhn(root, split)
    if key == "gtsrb":
        return load_gtsrb(root, split)
    if key in ("stanford_cars", "cars"):
        return load_stanford_cars(root, split)
    if key == "eurosat":
        return _load_eurosat(root, split)
    if key in ("dtd", "resisc45", "sun397"):
        return load_image_folder(root, split, kwargs.get("classnames"), templates_for(key), key)
    if key == "image_folder":
        return load_image_folder(root, split, kwargs.get("classnames"), kwargs.get("templates"), kwargs.get("name"))
    raise ValueError(f"unknown vision dataset {name!r}; known: {', '.join(VISION_DATASETS)}")


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------

class ImageBatches(EpochSizes):
    """Seeded, resumable mini-batches of preprocessed images (the image twin of
    :class:`instantsoup.data.Batches`, with the same methods).

    ``batches.batch(step)`` returns ``({"pixel_values": (B, 3, H, W) float32}, labels (B,) int64)``
    for a *global* step: epoch ``step // steps_per_epoch``, whose order is a permutation drawn from
    ``(seed, epoch)`` alone (or the dataset order when ``shuffle=False``). So any step can be
    recomputed exactly and a run resumes with ``batches.iter_steps(start=k)``. ``iter(batches)`` is
    one epoch (epoch 0); ``len(batches)`` its number of steps. The last batch of an epoch is smaller
    unless ``drop_last``.

    Args:
        dataset: an :class:`ImageDataset`.
        batch_size: images per batch.
        seed: seed of the shuffle.
        shuffle: shuffle each epoch.
        processor: the :class:`ImageProcessor` (default: CLIP at 224).
        drop_last: drop the incomplete last batch of an epoch.
        prefetch: batches prepared ahead in a background thread while the caller trains (the
            C training step releases the GIL); 0 prepares each batch on demand. The batches are
            the same either way.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int = 32, seed: int = 0, shuffle: bool = True,
                 processor: ImageProcessor | None = None, *, drop_last: bool = False, prefetch: int = 1,
                 _indices: np.ndarray | None = None):
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"ImageBatches: expected an ImageDataset, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"ImageBatches: batch_size must be a positive int, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.processor = processor if processor is not None else ImageProcessor()
        self.drop_last = bool(drop_last)
        self.prefetch = max(0, int(prefetch))
        self._indices = (np.arange(len(dataset), dtype=np.int64) if _indices is None
                         else np.asarray(_indices, dtype=np.int64))
        if len(self._indices) == 0:
            raise ValueError("ImageBatches: no examples")
        if self._indices.ndim != 1 or self._indices.min() < 0 or self._indices.max() >= len(dataset):
            raise ValueError("ImageBatches: indices out of range of the dataset")
        if self.drop_last and len(self._indices) < self.batch_size:
            raise ValueError(f"ImageBatches: drop_last with {len(self._indices)} examples < batch_size "
                             f"{self.batch_size} leaves no batch")
        self._order_cache: tuple[int, np.ndarray] | None = None

    # -- sizes (num_examples, steps_per_epoch, num_steps, indices): EpochSizes ----------------------
    @property
    def labels(self) -> np.ndarray:
        """(N,) labels of :attr:`indices`, in that order."""
        return self.dataset.labels[self._indices]

    # -- order -------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices in the order of epoch ``epoch``."""
        if not self.shuffle:
            return self._indices
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), 0x1A6E]))
        order = self._indices[rng.permutation(len(self._indices))]
        self._order_cache = (int(epoch), order)
        return order

    def batch_indices(self, step: int) -> np.ndarray:
        """(B,) dataset indices of global step ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, k = divmod(int(step), self.steps_per_epoch)
        return self.order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    # -- batches -----------------------------------------------------------------------------------
    def collate(self, indices: Sequence[int] | np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Preprocess the dataset's images at ``indices`` -> (batch dict, labels (B,) int64)."""
        idx = np.asarray(indices, dtype=np.int64)
        ds = self.dataset
        out = np.empty((len(idx), 3) + self.processor.crop_size, dtype=np.float32)
        for j, i in enumerate(idx):
            where = ds.images[i] if ds.lazy else f"{ds.name}[{int(i)}]"
            px = self.processor.process(ds.image(int(i)), where=where)
            if px.shape != out.shape[1:]:
                raise ValueError(f"{where}: processed to {px.shape}, expected {out.shape[1:]}")
            out[j] = px
        return {"pixel_values": out}, ds.labels[idx].copy()

    def batch(self, step: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(batch, labels) of global step ``step`` (deterministic)."""
        return self.collate(self.batch_indices(step))

    def _steps(self, start: int, stop: int | None) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray]]:
        step = int(start)
        if self.prefetch == 0:
            while stop is None or step < stop:
                b, y = self.batch(step)
                yield step, b, y
                step += 1
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        pending: deque = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="instantsoup-images") as pool:
            try:
                while True:
                    while len(pending) <= self.prefetch and (stop is None or step < stop):
                        pending.append((step, pool.submit(self.batch, step)))
                        step += 1
                    if not pending:
                        return
                    s, fut = pending.popleft()
                    b, y = fut.result()
                    yield s, b, y
            finally:
                for _, fut in pending:
                    fut.cancel()

    def iter_steps(self, num_steps: int | None = None, start: int = 0, *, epochs: float | None = None,
                   with_step: bool = False) -> Iterator:
        """Batches of global steps ``start``, ``start + 1``, ... (crossing epochs).

        num_steps: how many (None and no ``epochs`` = endless); epochs: alternatively a (fractional)
        number of epochs counted from step 0 — the iterator stops at ``num_steps(epochs)``.
        Yields (batch, labels), or (step, batch, labels) with ``with_step``.
        """
        stop = self.stop_step(num_steps, start, epochs)
        for s, b, y in self._steps(start, stop):
            yield (s, b, y) if with_step else (b, y)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """The batches of one epoch, in order."""
        spe = self.steps_per_epoch
        return self.iter_steps(spe, epoch * spe)

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """One pass: the batches of epoch 0 (use :meth:`iter_steps` to train across epochs)."""
        return self.epoch(0)

    # -- derived -----------------------------------------------------------------------------------
    def _options(self) -> dict:
        return dict(batch_size=self.batch_size, seed=self.seed, shuffle=self.shuffle, processor=self.processor,
                    drop_last=self.drop_last, prefetch=self.prefetch)

    def subset(self, n: int | float, seed: int, **overrides: Any) -> "ImageBatches":
        """A seeded random subset (n examples, or a fraction in (0, 1]) that also shuffles with
        ``seed``; other constructor options may be overridden by keyword."""
        total = len(self._indices)
        if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
            raise TypeError(f"subset size must be an int count or a float fraction, got {type(n).__name__}")
        if isinstance(n, (float, np.floating)):
            if not 0.0 < n <= 1.0:
                raise ValueError(f"subset fraction must be in (0, 1], got {n}")
            k = max(1, int(round(float(n) * total)))
        else:
            k = int(n)
            if not 1 <= k <= total:
                raise ValueError(f"subset size must be in [1, {total}], got {k}")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B5B]))
        chosen = np.sort(self._indices[rng.permutation(total)[:k]])
        opts = self._options()
        opts.update(seed=int(seed), drop_last=self.drop_last and k >= self.batch_size)
        opts.update(overrides)
        return ImageBatches(self.dataset, _indices=chosen, **opts)

    def with_options(self, **overrides: Any) -> "ImageBatches":
        """The same examples with other options (e.g. ``shuffle=False`` for evaluation)."""
        opts = self._options()
        opts.update(overrides)
        return ImageBatches(self.dataset, _indices=self._indices, **opts)

    def collect(self, fn: Any) -> np.ndarray:
        """Apply ``fn`` (e.g. ``model.forward``) to every batch of one pass; the outputs stacked in
        the order of :attr:`indices`: (N, ...) array."""
        if self.drop_last and len(self._indices) % self.batch_size:
            raise ValueError("collect: drop_last leaves examples out; use with_options(drop_last=False)")
        pos = {int(i): r for r, i in enumerate(self._indices)}
        out = None
        for step, batch, _ in self._steps(0, self.steps_per_epoch):
            idx = self.batch_indices(step)
            y = np.asarray(fn(batch))
            if y.shape[0] != len(idx):
                raise ValueError(f"collect: fn returned {y.shape[0]} rows for a batch of {len(idx)}")
            if out is None:
                out = np.empty((len(self._indices),) + y.shape[1:], dtype=y.dtype)
            out[[pos[int(i)] for i in idx]] = y
        return out

    def __repr__(self) -> str:
        return (f"ImageBatches({self.dataset.name}/{self.dataset.split}: n={self.num_examples}, "
                f"batch_size={self.batch_size}, steps_per_epoch={self.steps_per_epoch}, seed={self.seed}, "
                f"shuffle={self.shuffle})")


class ImageSplit:
    """One split of images in the shape of the trainer's tokenized ``Split`` (``labels``,
    ``len``, ``take(idx)``, ``collate(idx) -> ({"pixel_values"}, labels)``), so the training loop and
    the pruning methods drive image tasks unchanged. Images are preprocessed when collated.

    ``input_ids`` exists for code that sorts examples by length: every image counts as length 1.
    """

    def __init__(self, dataset: ImageDataset, processor: ImageProcessor | None = None,
                 indices: np.ndarray | None = None):
        self.dataset = dataset
        self.processor = processor if processor is not None else ImageProcessor()
        self.indices = (np.arange(len(dataset), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        self.token_type_ids = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels[self.indices]

    @property
    def input_ids(self) -> list[np.ndarray]:
        return [np.zeros(1, dtype=np.int64)] * len(self.indices)

    def take(self, idx: Sequence[int] | np.ndarray) -> "ImageSplit":
        return ImageSplit(self.dataset, self.processor, self.indices[np.asarray(idx, dtype=np.int64)])

    def collate(self, idx: Sequence[int] | np.ndarray, pad_id: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Examples ``idx`` (positions in this split) -> ({"pixel_values": (B,3,H,W)}, labels (B,))."""
        rows = self.indices[np.asarray(idx, dtype=np.int64)]
        ds = self.dataset
        out = np.empty((len(rows), 3) + self.processor.crop_size, dtype=np.float32)
        for j, i in enumerate(rows):
            where = ds.images[i] if ds.lazy else f"{ds.name}[{int(i)}]"
            out[j] = self.processor.process(ds.image(int(i)), where=where)
        return {"pixel_values": out}, ds.labels[rows].copy()
