"""Vision data: the image pipeline equals transformers' CLIPImageProcessor, every dataset format
loads from small files written in its published layout, batches are seeded and resumable, the CLIP
tokenizer equals CLIPTokenizerFast, and bad input gives clear errors."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import warnings

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from instantsoup.data import vision as V  # noqa: E402
from instantsoup.data.clip_tokenizer import CLIPTokenizer  # noqa: E402
from instantsoup.data.vision import (  # noqa: E402
    DatasetFormatError,
    ImageBatches,
    ImageDataset,
    ImageDecodeError,
    ImageProcessor,
    check_pixel_values,
    load_vision_dataset,
)


def _hf_processor(**kw):
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from transformers import CLIPImageProcessorPil as P
        except ImportError:  # older transformers: the slow processor is the PIL one
            P = transformers.CLIPImageProcessor
        return P(**kw)


def _hf(proc, images):
    return proc(images, return_tensors="np", input_data_format="channels_last")["pixel_values"] \
        if isinstance(images, np.ndarray) else proc(images, return_tensors="np")["pixel_values"]


# ------------------------------------------------------------------------------------------------
# preprocessing == CLIPImageProcessor
# ------------------------------------------------------------------------------------------------

def _pil_image(rng, h, w, mode):
    if mode in ("RGBA", "CMYK"):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
        return im if mode == "RGBA" else im.convert("CMYK")
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return im if mode == "RGB" else im.convert(mode)


@pytest.mark.parametrize("size,crop", [(40, 36), (24, 24), (32, 40)])
def test_pipeline_equals_clip_image_processor_pil(rng, size, crop):
    hf = _hf_processor(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})
    ours = ImageProcessor(shortest_edge=size, crop_size=(crop, crop))
    cases = [(32, 32, "RGB"), (17, 53, "L"), (61, 29, "RGBA"), (40, 40, "RGB"), (5, 7, "RGB"),
             (100, 41, "P"), (33, 80, "LA"), (20, 30, "1"), (25, 26, "CMYK"), (3, 90, "RGB")]
    for h, w, mode in cases:
        im = _pil_image(rng, h, w, mode)
        want = _hf(hf, im)
        got = ours(im)
        assert got.dtype == np.float32 and got.shape == (1, 3, crop, crop)
        np.testing.assert_array_equal(got, want, err_msg=f"{mode} {h}x{w}")


def test_pipeline_equals_clip_image_processor_arrays_and_batches(rng):
    hf = _hf_processor(size={"shortest_edge": 30}, crop_size={"height": 28, "width": 28})
    ours = ImageProcessor(shortest_edge=30, crop_size=(28, 28))
    for shape in [(31, 45, 3), (45, 31, 4), (20, 20, 1), (50, 60, 3)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(ours(a), _hf(hf, a), err_msg=str(shape))
    # default CLIP settings (224, bicubic) on a (N, H, W, 3) batch like CIFAR's
    batch = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ImageProcessor()(batch), _hf(_hf_processor(), list(batch)))


def test_pipeline_from_preprocessor_config(tmp_path, rng):
    hf = _hf_processor(size={"shortest_edge": 26}, crop_size={"height": 22, "width": 22}, resample=2,
                       image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    hf.save_pretrained(tmp_path)
    ours = ImageProcessor.from_pretrained(tmp_path)
    assert ours.crop_size == (22, 22) and ours.shortest_edge == 26 and ours.resample == 2
    im = _pil_image(rng, 37, 51, "RGB")
    np.testing.assert_array_equal(ours(im), _hf(hf, im))
    # our own config round-trips and transformers reads it
    out = tmp_path / "ours"
    ours.save_pretrained(out)
    hf2 = _hf_processor(**{k: v for k, v in json.loads((out / "preprocessor_config.json").read_text()).items()
                           if k != "image_processor_type"})
    np.testing.assert_array_equal(ImageProcessor.from_pretrained(out)(im), _hf(hf2, im))
    # the steps switched off one by one (the arithmetic path, not the lookup table)
    for off in ({"do_normalize": False}, {"do_rescale": False}, {"do_center_crop": False, "do_resize": True,
                                                                  "size": {"height": 22, "width": 22}}):
        kw = dict(size={"shortest_edge": 26}, crop_size={"height": 22, "width": 22}, image_mean=[0.5, 0.4, 0.3],
                  image_std=[0.2, 0.25, 0.3])
        kw.update(off)
        np.testing.assert_array_equal(ImageProcessor.from_config(kw)(im), _hf(_hf_processor(**kw), im), err_msg=str(off))
    # legacy int sizes; fall back to config.json's image_size without a preprocessor config
    legacy = ImageProcessor.from_config({"size": 24, "crop_size": 20})
    assert legacy.shortest_edge == 24 and legacy.crop_size == (20, 20)
    cfg_dir = tmp_path / "model"
    cfg_dir.mkdir()
    (cfg_dir / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": {"image_size": 48}}))
    p = ImageProcessor.from_pretrained(cfg_dir)
    assert p.shortest_edge == 48 and p.crop_size == (48, 48)


def test_pipeline_fixed_size_resize_and_file_input(tmp_path, rng):
    hf = _hf_processor(size={"height": 20, "width": 24}, crop_size={"height": 18, "width": 18})
    ours = ImageProcessor.from_config({"size": {"height": 20, "width": 24}, "crop_size": {"height": 18, "width": 18}})
    im = _pil_image(rng, 41, 17, "RGB")
    np.testing.assert_array_equal(ours(im), _hf(hf, im))
    path = tmp_path / "x.png"
    im.save(path)
    np.testing.assert_array_equal(ours(str(path)), _hf(hf, Image.open(path)))


def test_pipeline_errors(tmp_path):
    p = ImageProcessor(shortest_edge=8, crop_size=(8, 8))
    with pytest.raises(ValueError, match=r"\(H, W, 2\)|shape \(4, 4, 2\)"):
        p(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        p(np.zeros((1, 2, 4, 4, 3), np.uint8))  # 5-d
    with pytest.raises(TypeError, match="uint8"):
        p(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="PIL image"):
        p([object()])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        p(str(bad))
    from instantsoup.data import DataError
    assert issubclass(ImageDecodeError, DataError) and issubclass(DatasetFormatError, ValueError)
    trunc = tmp_path / "trunc.png"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="trunc.png"):
        p(str(trunc))
    with pytest.raises(ValueError, match="do_convert_rgb"):
        ImageProcessor(shortest_edge=8, crop_size=(8, 8), do_convert_rgb=False)(Image.new("L", (9, 9)))
    with pytest.raises(ValueError, match="3 values"):
        ImageProcessor(image_mean=(0.5, 0.5))


def test_check_pixel_values():
    ok = np.zeros((2, 3, 8, 8), np.float32)
    assert check_pixel_values(ok, 8) is ok
    with pytest.raises(TypeError, match="uint8.*ImageProcessor"):
        check_pixel_values(ok.astype(np.uint8), 8)
    with pytest.raises(TypeError, match="float64"):
        check_pixel_values(ok.astype(np.float64), 8)
    with pytest.raises(TypeError, match="numpy"):
        check_pixel_values(ok.tolist(), 8)
    with pytest.raises(ValueError, match="3 channels"):
        check_pixel_values(np.zeros((2, 1, 8, 8), np.float32), 8)
    with pytest.raises(ValueError, match="channels-last"):
        check_pixel_values(np.zeros((2, 8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match="expects 16x16"):
        check_pixel_values(ok, 16)
    with pytest.raises(ValueError, match="4 dimensions"):
        check_pixel_values(ok[0], 8)
    bad = ok.copy()
    bad[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_pixel_values(bad, 8)


# ------------------------------------------------------------------------------------------------
# dataset formats, written in their published layouts
# ------------------------------------------------------------------------------------------------

def _py2_pickle(obj) -> bytes:
    """A pickle like the CIFAR files (written by Python 2 with numpy.core)."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _cifar_batch(rng, n, label_keys):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    d = {b"batch_label": b"training batch", b"data": data, b"filenames": [b"img_%d.png" % i for i in range(n)]}
    for k, nc in label_keys.items():
        d[k.encode()] = [int(x) for x in rng.integers(0, nc, n)]
    return d


def _write_cifar10(root, rng, n=7):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (d / "batches.meta").write_bytes(_py2_pickle({b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072}))
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(rng, n, {"labels": 10})
        (d / name).write_bytes(_py2_pickle(batches[name]))
    return d, batches


def test_cifar10_layouts(tmp_path, rng):
    d, batches = _write_cifar10(tmp_path, rng)
    for root in (d, tmp_path):
        ds = load_vision_dataset("cifar10", root, "train")
        assert ds.images.shape == (35, 32, 32, 3) and ds.images.dtype == np.uint8
        assert ds.classnames[1] == "automobile" and ds.templates[0] == "a photo of a {}."
        # row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
        raw = batches["data_batch_2"][b"data"][3]
        img = ds.images[7 + 3]
        assert img[5, 9, 0] == raw[5 * 32 + 9] and img[5, 9, 1] == raw[1024 + 5 * 32 + 9]
        assert img[31, 0, 2] == raw[2048 + 31 * 32]
        np.testing.assert_array_equal(ds.labels[7:14], batches["data_batch_2"][b"labels"])
    test = load_vision_dataset("cifar10", d, "test")
    assert len(test) == 7 and test.split == "test"
    # the .tar.gz archive as published
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    ds2 = V.load_cifar10(tgz, "test")
    np.testing.assert_array_equal(ds2.images, test.images)


def test_cifar100_fine_and_coarse(tmp_path, rng):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    fine = [b"apple", b"aquarium_fish"] + [b"class_%d" % i for i in range(98)]
    coarse = [b"aquatic_mammals", b"fish"] + [b"super_%d" % i for i in range(18)]
    (d / "meta").write_bytes(_py2_pickle({b"fine_label_names": fine, b"coarse_label_names": coarse}))
    for split, n in (("train", 9), ("test", 4)):
        b = _cifar_batch(rng, n, {"fine_labels": 100, "coarse_labels": 20})
        (d / split).write_bytes(_py2_pickle(b))
        if split == "train":
            train = b
    ds = V.load_cifar100(tmp_path, "train")
    assert ds.num_classes == 100 and ds.classnames[1] == "aquarium fish" and len(ds) == 9
    np.testing.assert_array_equal(ds.labels, train[b"fine_labels"])
    dc = load_vision_dataset("cifar100_coarse", d, "train")
    assert dc.num_classes == 20 and dc.classnames[0] == "aquatic mammals"
    np.testing.assert_array_equal(dc.labels, train[b"coarse_labels"])
    assert len(V.load_cifar100(d, "test")) == 4


def test_cifar_errors(tmp_path, rng):
    d, batches = _write_cifar10(tmp_path, rng)
    b = dict(batches["data_batch_3"])
    b[b"data"] = b[b"data"][:, :3000]  # truncated rows
    (d / "data_batch_3").write_bytes(_py2_pickle(b))
    with pytest.raises(DatasetFormatError, match=r"data_batch_3.*\(N, 3072\)"):
        V.load_cifar10(d)
    b = dict(batches["data_batch_3"])
    b[b"labels"] = b[b"labels"][:-1]
    (d / "data_batch_3").write_bytes(_py2_pickle(b))
    with pytest.raises(DatasetFormatError, match="7 images but"):
        V.load_cifar10(d)
    (d / "data_batch_3").write_bytes(_py2_pickle(batches["data_batch_3"])[:100])
    with pytest.raises(DatasetFormatError, match="data_batch_3"):
        V.load_cifar10(d)

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DatasetFormatError, match="refusing to unpickle"):
        V.load_cifar10(d)
    os.remove(d / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        V.load_cifar10(d)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        V.load_cifar10(tmp_path / "nowhere")


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("variant,gz", [("mnist", True), ("mnist", False), ("fashion_mnist", True)])
def test_mnist_idx(tmp_path, rng, variant, gz):
    sub = tmp_path / ("MNIST/raw" if variant == "mnist" and not gz else "")
    sub.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", 11), ("t10k", 5)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        data[prefix] = (x, y)
        for kind, arr, dims in (("images", x, 3), ("labels", y, 1)):
            raw = _idx_bytes(arr)
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            if gz:
                (sub / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (sub / name).write_bytes(raw)
    ds = load_vision_dataset(variant, tmp_path, "train")
    np.testing.assert_array_equal(ds.images, data["train"][0])
    np.testing.assert_array_equal(ds.labels, data["train"][1])
    assert ds.images.shape == (11, 28, 28) and ds.labels.dtype == np.int64 and ds.num_classes == 10
    if variant == "fashion_mnist":
        assert ds.classnames[9] == "ankle boot"
    else:
        assert ds.templates == ['a photo of the number: "{}".']
    assert len(load_vision_dataset(variant, tmp_path, "test")) == 5
    # pixels go through the pipeline as grey -> RGB
    px = ImageBatches(ds, 4, processor=ImageProcessor(shortest_edge=28, crop_size=(28, 28))).batch(0)[0]["pixel_values"]
    assert px.shape == (4, 3, 28, 28)


def test_idx_errors(tmp_path, rng):
    x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    good = _idx_bytes(x)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(good[:-10])
    with pytest.raises(DatasetFormatError, match=r"train-images-idx3-ubyte.*truncated"):
        V.read_idx(p)
    p.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        V.read_idx(p)
    p.write_bytes(gzip.compress(good)[:40])
    with pytest.raises(DatasetFormatError, match="gzip"):
        V.read_idx(p)
    p.write_bytes(gzip.compress(good))
    np.testing.assert_array_equal(V.read_idx(p), x)
    # label count mismatch
    p.write_bytes(good)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DatasetFormatError, match="6 images but .* 5 labels"):
        V.load_mnist(tmp_path)
    # int32 IDX round-trips in native order
    q = tmp_path / "ints.idx"
    q.write_bytes(_idx_bytes(np.arange(12, dtype=np.int32).reshape(3, 4)))
    np.testing.assert_array_equal(V.read_idx(q), np.arange(12).reshape(3, 4))


def test_svhn_mat(tmp_path, rng):
    scipy_io = pytest.importorskip("scipy.io")
    X = rng.integers(0, 256, (32, 32, 3, 8), dtype=np.uint8)
    y = np.array([[1], [10], [3], [10], [9], [2], [5], [7]], dtype=np.uint8)
    scipy_io.savemat(tmp_path / "train_32x32.mat", {"X": X, "y": y})
    ds = load_vision_dataset("svhn", tmp_path, "train")
    assert ds.images.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(ds.images[2], X[:, :, :, 2])
    np.testing.assert_array_equal(ds.labels, [1, 0, 3, 0, 9, 2, 5, 7])
    assert ds.classnames[0] == "0"
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y[:5]})
    with pytest.raises(DatasetFormatError, match="8 images but 5 labels"):
        V.load_svhn(tmp_path, "test")
    scipy_io.savemat(tmp_path / "extra_32x32.mat", {"images": X})
    with pytest.raises(DatasetFormatError, match="X and y"):
        V.load_svhn(tmp_path, "extra")
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage" * 10)
    with pytest.raises(DatasetFormatError, match="test_32x32.mat"):
        V.load_svhn(tmp_path, "test")


def _write_folder(base, classes, per_class, rng, ext=".png", size=(9, 7)):
    for c in classes:
        (base / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(base / c / f"{i:03d}{ext}")


def test_image_folder(tmp_path, rng):
    _write_folder(tmp_path / "train", ["tabby_cat", "dog"], 3, rng)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    ds = load_vision_dataset("image_folder", tmp_path, "train")
    assert ds.lazy and len(ds) == 6 and ds.classnames == ["dog", "tabby cat"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 1])
    assert ds.image(0).size == (7, 9)
    batch, labels = ImageBatches(ds, 4, shuffle=False, processor=ImageProcessor(shortest_edge=8, crop_size=(8, 8))).batch(1)
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and list(labels) == [1, 1]
    # a file that fails to decode is named
    (tmp_path / "train" / "dog" / "zz_bad.png").write_bytes(b"\x89PNG broken")
    ds = V.load_image_folder(tmp_path, "train")
    with pytest.raises(ImageDecodeError, match="zz_bad.png"):
        ImageBatches(ds, 8, shuffle=False, processor=ImageProcessor(shortest_edge=8, crop_size=(8, 8))).batch(0)
    with pytest.raises(FileNotFoundError, match="'val'"):
        V.load_image_folder(tmp_path, "val")
    with pytest.raises(DatasetFormatError, match="2 class folders but 3"):
        V.load_image_folder(tmp_path, "train", classnames=["a", "b", "c"])


def test_gtsrb_layouts(tmp_path, rng):
    train = tmp_path / "GTSRB" / "Final_Training" / "Images"
    _write_folder(train, [f"{k:05d}" for k in range(43)], 1, rng, ext=".ppm")
    ds = V.load_gtsrb(tmp_path, "train")
    assert len(ds) == 43 and ds.classnames[14] == "stop" and ds.labels[14] == 14
    assert "traffic sign" in ds.templates[0]
    test = tmp_path / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, k in enumerate([3, 14, 42]):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;8;8;1;1;7;7;{k}")
    (test / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    dt = load_vision_dataset("gtsrb", tmp_path, "test")
    np.testing.assert_array_equal(dt.labels, [3, 14, 42])
    assert dt.images[1].endswith("00001.ppm")
    (test / "GT-final_test.csv").write_text("\n".join(rows + ["00009.ppm;8;8;1;1;7;7;5"]) + "\n")
    with pytest.raises(FileNotFoundError, match="00009.ppm"):
        V.load_gtsrb(tmp_path, "test")


def test_stanford_cars_devkit_and_folders(tmp_path, rng):
    scipy_io = pytest.importorskip("scipy.io")
    (tmp_path / "devkit").mkdir()
    names = np.empty((1, 3), dtype=object)
    names[0] = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Volvo XC90 SUV 2007"]
    scipy_io.savemat(tmp_path / "devkit" / "cars_meta.mat", {"class_names": names})
    ann = np.zeros((1, 4), dtype=[("fname", object), ("class", object)])
    (tmp_path / "cars_train").mkdir()
    for i, c in enumerate([3, 1, 2, 3]):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "cars_train" / f"{i:05d}.jpg")
        ann[0, i] = (f"{i:05d}.jpg", np.array([[c]], dtype=np.uint8))
    scipy_io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"annotations": ann})
    ds = load_vision_dataset("stanford_cars", tmp_path, "train")
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 2])
    assert ds.classnames[1] == "Acura RL Sedan 2012" and ds.templates[3] == "i love my {}!"
    assert ds.image(0).size == (12, 10)
    folders = tmp_path / "folders"
    _write_folder(folders / "test", ["Acura RL Sedan 2012", "Volvo XC90 SUV 2007"], 2, rng, ext=".jpg")
    df = load_vision_dataset("stanford_cars", folders, "test")
    assert df.classnames == ["Acura RL Sedan 2012", "Volvo XC90 SUV 2007"] and len(df) == 4


def test_eurosat_folders(tmp_path, rng):
    _write_folder(tmp_path / "2750", V._EUROSAT_DIRS, 1, rng, ext=".jpg")
    ds = load_vision_dataset("eurosat", tmp_path)
    assert ds.classnames[2] == "brushland or shrubland" and len(ds) == 10 and "satellite" in ds.templates[0]


def test_dataset_validation_and_prompts():
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ImageDataset(imgs, np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="labels span"):
        ImageDataset(imgs, np.array([0, 1, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(imgs.astype(np.float32), np.array([0, 1, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="exactly one"):
        ImageDataset(imgs, np.array([0, 1, 1]), ["a", "b"], templates=["no slot"])
    ds = ImageDataset(imgs, np.array([0, 1, 1]), ["cat", "dog"], templates=["a {}.", "the {}!"])
    assert ds.prompts() == [["a cat.", "the cat!"], ["a dog.", "the dog!"]]
    assert ds.metric(np.array([0, 1, 0]))["accuracy"] == pytest.approx(2 / 3)
    assert ds.metric(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]))["accuracy"] == 1.0
    assert len(V.CLASSNAMES["gtsrb"]) == 43 and len(V.CLASSNAMES["eurosat"]) == 10
    for name, tl in V.TEMPLATES.items():
        assert tl and all(t.count("{}") == 1 for t in tl), name
    assert V.templates_for("CIFAR-10") == V.TEMPLATES["cifar10"] and len(V.TEMPLATES["cifar10"]) == 18
    with pytest.raises(ValueError, match="unknown vision dataset"):
        load_vision_dataset("imagenet-21k", ".")


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------

def _small_ds(rng, n=23):
    return ImageDataset(rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8), rng.integers(0, 4, n), list("abcd"),
                        name="toy")


def test_batches_seeded_resumable_and_subsets(rng):
    ds = _small_ds(rng)
    proc = ImageProcessor(shortest_edge=6, crop_size=(6, 6))
    b = ImageBatches(ds, 5, seed=3, processor=proc)
    assert b.steps_per_epoch == len(b) == 5 and b.num_steps(1.5) == 8 and b.num_steps(0.01) == 1
    # an epoch covers every example once; the last batch is smaller
    seen = np.concatenate([b.batch_indices(s) for s in range(5)])
    assert sorted(seen) == list(range(23)) and len(b.batch_indices(4)) == 3
    # epochs differ, seeds differ, same seed -> same batches
    assert not np.array_equal(b.order(0), b.order(1))
    assert not np.array_equal(b.order(0), ImageBatches(ds, 5, seed=4, processor=proc).order(0))
    full = list(b.iter_steps(epochs=12 / 5))
    assert len(full) == 12
    resumed = list(ImageBatches(ds, 5, seed=3, processor=proc, prefetch=0).iter_steps(5, start=7))
    assert len(resumed) == 5
    it = ImageBatches(ds, 5, seed=3, processor=proc, prefetch=3).iter_steps(start=7)  # endless, closed early
    resumed_prefetched = [next(it) for _ in range(5)]
    it.close()
    for (x1, y1), (x2, y2) in zip(resumed, resumed_prefetched):
        np.testing.assert_array_equal(x1["pixel_values"], x2["pixel_values"])
        np.testing.assert_array_equal(y1, y2)
    for (x1, y1), (x2, y2) in zip(full[7:], resumed):
        np.testing.assert_array_equal(x1["pixel_values"], x2["pixel_values"])
        np.testing.assert_array_equal(y1, y2)
    px, y = full[6]
    idx = b.batch_indices(6)
    np.testing.assert_array_equal(px["pixel_values"], proc(ds.images[idx]))
    np.testing.assert_array_equal(y, ds.labels[idx])
    assert px["pixel_values"].dtype == np.float32 and y.dtype == np.int64
    # one epoch in order without shuffling
    ordered = ImageBatches(ds, 10, shuffle=False, processor=proc)
    assert [len(yy) for _, yy in ordered] == [10, 10, 3]
    np.testing.assert_array_equal(np.concatenate([yy for _, yy in ordered]), ds.labels)
    assert len(ImageBatches(ds, 10, drop_last=True, processor=proc)) == 2
    # subsets: seeded, without replacement, their own shuffle
    s1, s2, s3 = b.subset(10, seed=1), b.subset(10, seed=1), b.subset(10, seed=2)
    np.testing.assert_array_equal(s1.indices, s2.indices)
    assert not np.array_equal(s1.indices, s3.indices)
    assert len(set(s1.indices.tolist())) == 10 and s1.steps_per_epoch == 2
    assert b.subset(0.5, seed=0).num_examples == 12
    sub_of_sub = s1.subset(4, seed=9)
    assert set(sub_of_sub.indices.tolist()) <= set(s1.indices.tolist())
    with_steps = list(s1.iter_steps(3, start=1, with_step=True))
    assert [w[0] for w in with_steps] == [1, 2, 3]
    np.testing.assert_array_equal(s1.labels, ds.labels[s1.indices])
    # collect returns outputs in dataset order whatever the shuffle
    got = b.collect(lambda batch: batch["pixel_values"][:, 0, 0, 0])
    np.testing.assert_array_equal(got, proc(ds.images)[:, 0, 0, 0])
    assert b.with_options(shuffle=False).order(3).tolist() == list(range(23))
    # the trainer-facing split
    split = V.ImageSplit(ds, proc)
    assert len(split) == 23 and split.labels.tolist() == ds.labels.tolist()
    part = split.take([3, 1, 7])
    bx, by = part.collate([2, 0])
    np.testing.assert_array_equal(bx["pixel_values"], proc(ds.images[[7, 3]]))
    assert by.tolist() == ds.labels[[7, 3]].tolist() and len(part.input_ids) == 3
    with pytest.raises(ValueError, match="subset size"):
        b.subset(24, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        ImageBatches(ds, 0)
    with pytest.raises(TypeError, match="ImageDataset"):
        ImageBatches([1, 2], 1)


# ------------------------------------------------------------------------------------------------
# CLIP tokenizer == CLIPTokenizerFast
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_tokenizer_dir(tmp_path_factory):
    """A tiny CLIP tokenizer: byte-level BPE with </w> word ends trained on a few prompts."""
    from clip_helpers import write_clip_tokenizer

    d = tmp_path_factory.mktemp("cliptok")
    write_clip_tokenizer(d)
    assert (d / "merges.txt").read_text().startswith("#version")
    return d


TEXTS = ["a photo of a cat.", "A BLURRY   photo\tof the Dog!!", "it's 2023: the café über naïve", "",
         "<|endoftext|> hi <|startoftext|>", "x" * 300, "日本語 テキスト 123 ½", "don't   we'll they're I'M",
         "red and white circle 20 kph speed limit", "a photo of the number: \"7\".", "emoji 🙂 and tabs\t\n"]


def test_clip_tokenizer_parity(clip_tokenizer_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.CLIPTokenizerFast.from_pretrained(clip_tokenizer_dir)
    ours = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    assert ours.pad_token_id == hf.pad_token_id and ours.eos_token_id == hf.eos_token_id
    assert ours.bos_token_id == hf.bos_token_id
    for t in TEXTS:  # untruncated
        assert ours.tokenize([t], 10**6)[0] == hf(t)["input_ids"], t
    for max_length in (77, 9):
        want = hf(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        got = ours.encode(TEXTS, max_length=max_length)
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
        assert got["input_ids"].dtype == np.int64
    fixed = ours.encode(TEXTS[:2], padding="max_length")
    assert fixed["input_ids"].shape == (2, 77)
    want = hf(TEXTS[:2], padding="max_length", max_length=77, return_tensors="np")
    np.testing.assert_array_equal(fixed["input_ids"], want["input_ids"])
    assert ours.decode(ours.tokenize(["a photo of a cat."])[0]) == "a photo of a cat ."
    # tokenizer.json written by transformers, and our own save, load to the same ids
    hf.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    for d in (tmp_path / "hf",):
        np.testing.assert_array_equal(CLIPTokenizer.from_pretrained(d).encode(TEXTS)["input_ids"],
                                      ours.encode(TEXTS)["input_ids"])
    ours.save_pretrained(tmp_path / "ours")
    hf2 = transformers.CLIPTokenizerFast.from_pretrained(tmp_path / "ours")
    np.testing.assert_array_equal(hf2(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="np")["input_ids"],
                                  ours.encode(TEXTS)["input_ids"])


def test_clip_tokenizer_errors(clip_tokenizer_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        CLIPTokenizer.from_pretrained(tmp_path)
    tok = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    with pytest.raises(TypeError, match="text 1"):
        tok.encode(["ok", 3])
    with pytest.raises(ValueError, match="max_length"):
        tok.encode(["ok"], max_length=1)
    (tmp_path / "vocab.json").write_text((clip_tokenizer_dir / "vocab.json").read_text())
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="merges.txt:2"):
        CLIPTokenizer.from_pretrained(tmp_path)
