"""Dataset loaders (models/datasets.py) and the shared Preprocess transform, on tiny fake data sets."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeclip.errors import EdgeclipError
from edgeclip.models.datasets import (
    FASHION_MNIST_CLASSES,
    LOADERS,
    LabeledImages,
    load_calibration,
    load_cifar100,
    load_dataset,
    parse_spec,
)
from edgeclip.models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess


# ---------------------------------------------------------------- helpers

def _cifar_row(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One CIFAR data row: 3072 uint8, the 32x32 R plane, then G, then B (each row-major)."""
    return np.concatenate([np.asarray(p, np.uint8).reshape(-1) for p in (r, g, b)])


def _zeros() -> np.ndarray:
    return np.zeros((32, 32), np.uint8)


def _full(v: int) -> np.ndarray:
    return np.full((32, 32), v, np.uint8)


ROWS = np.repeat(np.arange(32, dtype=np.uint8)[:, None] * 8, 32, axis=1)  # value = row * 8
COLS = ROWS.T.copy()                                                     # value = col * 8
CIFAR_CLASSES = ["apple", "aquarium_fish", "baby", "bear", "beaver"]


def _make_cifar(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    test = {
        "filenames": ["red.png", "green.png", "blue.png", "ramp.png"],
        "data": np.stack([
            _cifar_row(_full(255), _zeros(), _zeros()),
            _cifar_row(_zeros(), _full(255), _zeros()),
            _cifar_row(_zeros(), _zeros(), _full(255)),
            _cifar_row(ROWS, COLS, _full(7)),
        ]),
        "fine_labels": [3, 0, 4, 1],
        "coarse_labels": [0, 0, 0, 0],
    }
    train = {
        "data": np.stack([_cifar_row(_full(10 * i), _full(1), _full(2)) for i in range(10)]),
        "fine_labels": [i % 5 for i in range(10)],
        "coarse_labels": [0] * 10,
    }
    for name, d in (("test", test), ("train", train)):
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": CIFAR_CLASSES, "coarse_label_names": ["x"]}, f)
    return folder


def _png(path: Path, color, size=(8, 6), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def _write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if compress else data)


def _fmnist_arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def _write_fmnist(root: Path, n_test=12, n_train=30, compress=True):
    test_x, test_y = _fmnist_arrays(n_test, 1)
    train_x, train_y = _fmnist_arrays(n_train, 2)
    sfx = ".gz" if compress else ""
    _write_idx(root / f"t10k-images-idx3-ubyte{sfx}", test_x, compress)
    _write_idx(root / f"t10k-labels-idx1-ubyte{sfx}", test_y, compress)
    _write_idx(root / f"train-images-idx3-ubyte{sfx}", train_x, compress)
    _write_idx(root / f"train-labels-idx1-ubyte{sfx}", train_y, compress)
    return (test_x, test_y), (train_x, train_y)


def _pixels(ds: LabeledImages) -> np.ndarray:
    return np.stack([np.asarray(ds.image(i)) for i in range(len(ds))])


# ---------------------------------------------------------------- CIFAR-100

def test_cifar100_channel_major_rows_become_rgb_images(tmp_path):
    folder = _make_cifar(tmp_path)
    ds = load_cifar100(str(folder), "test")
    assert len(ds) == 4 and ds.name == "cifar100" and ds.split == "test"
    red, green, blue, ramp = (np.asarray(ds.image(i)) for i in range(4))
    assert ds.image(0).mode == "RGB" and ds.image(0).size == (32, 32)
    assert red.shape == (32, 32, 3)
    assert red[0, 0].tolist() == [255, 0, 0] and (red == [255, 0, 0]).all()
    assert green[5, 9].tolist() == [0, 255, 0] and (green == [0, 255, 0]).all()
    assert blue[31, 31].tolist() == [0, 0, 255] and (blue == [0, 0, 255]).all()
    # spatial order: each plane is row-major, so R varies with the row and G with the column
    for r, c in ((0, 0), (3, 17), (31, 0), (0, 31), (20, 5)):
        assert ramp[r, c].tolist() == [r * 8, c * 8, 7]
    assert ds.labels.tolist() == [3, 0, 4, 1] and ds.labels.dtype == np.int64
    assert ds.classes == CIFAR_CLASSES
    assert ds.prompt_names[1] == "aquarium fish"
    assert [ds.classes[y] for y in ds.labels] == ["bear", "apple", "beaver", "aquarium_fish"]


def test_cifar100_train_split_and_parent_folder_and_spec(tmp_path):
    folder = _make_cifar(tmp_path)
    train = load_dataset(f"cifar100:{tmp_path}", "train")  # the parent of cifar-100-python
    assert len(train) == 10 and train.split == "train"
    assert Path(train.source) == folder
    assert train.labels.tolist() == [i % 5 for i in range(10)]
    assert [np.asarray(train.image(i))[4, 4].tolist() for i in range(10)] == [[10 * i, 1, 2] for i in range(10)]
    test = load_dataset(f"cifar100:{tmp_path}")  # default split is test
    assert len(test) == 4 and np.asarray(test.image(0))[0, 0].tolist() == [255, 0, 0]
    assert len(load_dataset(f"cifar100:{folder}", limit=2)) == 2


def test_cifar100_errors(tmp_path):
    with pytest.raises(EdgeclipError, match="cifar-100-python"):
        load_cifar100(str(tmp_path / "nowhere"), "test")
    with pytest.raises(EdgeclipError, match="needs a folder"):
        load_dataset("cifar100")
    folder = _make_cifar(tmp_path)
    with pytest.raises(EdgeclipError, match="no split 'val'"):
        load_cifar100(str(folder), "val")
    (folder / "meta").unlink()
    with pytest.raises(EdgeclipError, match="meta") as e:
        load_cifar100(str(folder), "test")
    assert str(folder) in str(e.value)


# ---------------------------------------------------------------- image folder

def _make_pets(root: Path) -> Path:
    # created out of order on purpose; classes must come back sorted
    _png(root / "zebra" / "z1.png", (0, 0, 200))
    _png(root / "cat" / "b.PNG", (20, 0, 0))
    _png(root / "cat" / "a.png", (10, 0, 0))
    _png(root / "dog" / "d1.png", (0, 30, 0), mode="RGB")
    _png(root / "dog" / "d2.bmp", (0, 40, 0))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "cat" / "Thumbs.db").write_bytes(b"\x00\x01")
    (root / "README.md").write_text("top-level file, not a class")
    _png(root / ".cache" / "hidden.png", (1, 2, 3))  # hidden folders are not classes
    return root


def test_image_folder_classes_labels_and_pixels(tmp_path):
    root = _make_pets(tmp_path / "pets")
    ds = load_dataset(f"folder:{root}")
    assert ds.name == "folder" and ds.classes == ["cat", "dog", "zebra"]
    assert len(ds) == 5  # txt / db / README / hidden folder ignored
    assert ds.labels.tolist() == [0, 0, 1, 1, 2]
    firsts = [np.asarray(ds.image(i).convert("RGB"))[0, 0].tolist() for i in range(len(ds))]
    assert firsts == [[10, 0, 0], [20, 0, 0], [0, 30, 0], [0, 40, 0], [0, 0, 200]]  # sorted files within a class
    assert ds.image(4).size == (8, 6)
    assert ds.spec() == f"folder:{root}"


def test_image_folder_underscores_read_as_spaces(tmp_path):
    _png(tmp_path / "golden_retriever" / "a.png", (1, 1, 1))
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["golden retriever"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(EdgeclipError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeclipError, match="no class sub-folders"):
        load_dataset(f"folder:{empty}")
    (empty / "loose.png").write_bytes(b"")  # images outside class folders do not count
    with pytest.raises(EdgeclipError, match="no class sub-folders"):
        load_dataset(f"folder:{empty}")
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "cat" / "a.txt").write_text("x")
    with pytest.raises(EdgeclipError, match="no images"):
        load_dataset(f"folder:{no_images}")
    with pytest.raises(EdgeclipError, match="needs a path"):
        load_dataset("folder")


def test_corrupt_image_raises_naming_the_file(tmp_path):
    _png(tmp_path / "cat" / "good.png", (5, 5, 5))
    bad = tmp_path / "cat" / "junk.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    cut = tmp_path / "dog" / "cut.png"
    cut.parent.mkdir()
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    cut.write_bytes(big.read_bytes()[:400])
    big.unlink()
    ds = load_dataset(f"folder:{tmp_path}")  # decoding is lazy: listing works
    assert len(ds) == 3
    assert np.asarray(ds.image(0))[0, 0].tolist() == [5, 5, 5]
    with pytest.raises(EdgeclipError, match="junk.png") as e:
        ds.image(1)
    assert str(bad) in str(e.value)
    with pytest.raises(EdgeclipError, match="cut.png"):
        ds.image(2)


# ---------------------------------------------------------------- ImageNet layout

def _make_imagenet(root: Path, index_in: str = "parent") -> Path:
    val = root / "val"
    index = {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"],
             "2": ["n01484850", "great_white_shark"], "3": ["n01491361", "tiger_shark"]}
    where = root if index_in == "parent" else val
    where.mkdir(parents=True, exist_ok=True)
    (where / "imagenet_class_index.json").write_text(json.dumps(index))
    _png(val / "n01443537" / "ILSVRC2012_val_00000002.JPEG", (1, 0, 0))  # PIL writes by extension -> JPEG
    _png(val / "n01443537" / "ILSVRC2012_val_00000001.png", (2, 0, 0))
    _png(val / "n01491361" / "ILSVRC2012_val_00000003.png", (3, 0, 0))
    _png(val / "not_a_wnid" / "x.png", (4, 0, 0))  # folders outside the index are not classes
    return val


@pytest.mark.parametrize("index_in", ["parent", "val"])
def test_imagenet_labels_index_the_full_class_list(tmp_path, index_in):
    val = _make_imagenet(tmp_path, index_in)
    ds = load_dataset(f"imagenet:{val}")
    assert ds.name == "imagenet"
    assert ds.classes == ["tench", "goldfish", "great white shark", "tiger shark"]
    assert len(ds) == 3
    # wnids 0 and 2 have no folder: labels still index the 4-class head, not the 2 present folders
    assert ds.labels.tolist() == [1, 1, 3]
    assert [ds.classes[y] for y in ds.labels] == ["goldfish", "goldfish", "tiger shark"]
    assert np.asarray(ds.image(2))[0, 0].tolist() == [3, 0, 0]
    assert ds.image(0).format == "PNG" and ds.image(1).format == "JPEG"  # sorted names: ...0001.png, ...0002.JPEG
    sub = ds.stratified(2)
    assert sorted(sub.labels.tolist()) == [1, 3]


def test_imagenet_errors(tmp_path):
    val = _make_imagenet(tmp_path)
    (tmp_path / "imagenet_class_index.json").unlink()
    with pytest.raises(EdgeclipError, match="imagenet_class_index.json"):
        load_dataset(f"imagenet:{val}")
    with pytest.raises(EdgeclipError, match="does not exist"):
        load_dataset(f"imagenet:{tmp_path / 'nope'}")
    other = tmp_path / "other"
    (other / "cats").mkdir(parents=True)
    (other / "imagenet_class_index.json").write_text(json.dumps({"0": ["n01440764", "tench"]}))
    with pytest.raises(EdgeclipError, match="none of the class index"):
        load_dataset(f"imagenet:{other}")


# ---------------------------------------------------------------- Fashion-MNIST (IDX)

def test_fashion_mnist_idx_gz_round_trip(tmp_path):
    (test_x, test_y), (train_x, train_y) = _write_fmnist(tmp_path)
    test = load_dataset(f"fashion-mnist:{tmp_path}", "test")
    assert test.name == "fashion-mnist" and test.split == "test" and len(test) == 12
    assert test.classes == FASHION_MNIST_CLASSES and test.prompt_names[0] == "t-shirt or top"
    assert test.labels.tolist() == test_y.tolist() and test.labels.dtype == np.int64
    assert test.image(0).mode == "L" and test.image(0).size == (28, 28)
    assert np.array_equal(_pixels(test), test_x)
    train = load_dataset(f"fashion-mnist:{tmp_path}", "train")
    assert train.split == "train" and len(train) == 30
    assert train.labels.tolist() == train_y.tolist()
    assert np.array_equal(_pixels(train), train_x)
    assert not np.array_equal(_pixels(train)[:12], test_x)
    assert load_dataset(f"fmnist:{tmp_path}", limit=5).labels.tolist() == test_y[:5].tolist()


def test_fashion_mnist_torchvision_layout_and_uncompressed(tmp_path):
    (test_x, test_y), (train_x, _) = _write_fmnist(tmp_path / "tv" / "FashionMNIST" / "raw")
    test = load_dataset(f"fashion-mnist:{tmp_path / 'tv'}", "test")
    assert np.array_equal(_pixels(test), test_x) and test.labels.tolist() == test_y.tolist()
    assert np.array_equal(_pixels(load_dataset(f"fashion-mnist:{tmp_path / 'tv'}", "train")), train_x)

    (raw_x, raw_y), _ = _write_fmnist(tmp_path / "plain", compress=False)
    plain = load_dataset(f"fashion-mnist:{tmp_path / 'plain'}", "test")
    assert np.array_equal(_pixels(plain), raw_x) and plain.labels.tolist() == raw_y.tolist()


def test_fashion_mnist_truncated_and_bad_files(tmp_path):
    _write_fmnist(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    full = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(full[:-100]))  # header says 12 images, payload is short
    with pytest.raises(EdgeclipError, match="truncated") as e:
        load_dataset(f"fashion-mnist:{tmp_path}", "test")
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)

    # a partly downloaded .gz: the gzip stream itself ends early
    images.write_bytes(gzip.compress(full)[:-30])
    with pytest.raises(EdgeclipError, match="truncated"):
        load_dataset(f"fashion-mnist:{tmp_path}", "test")

    images.write_bytes(gzip.compress(full[:10]))  # header cut inside the dimensions
    with pytest.raises(EdgeclipError, match="truncated"):
        load_dataset(f"fashion-mnist:{tmp_path}", "test")

    images.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + full[4:]))  # float32 IDX, not uint8
    with pytest.raises(EdgeclipError, match="not an IDX uint8"):
        load_dataset(f"fashion-mnist:{tmp_path}", "test")


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(EdgeclipError, match="does not exist"):
        load_dataset(f"fashion-mnist:{tmp_path / 'missing'}")
    with pytest.raises(EdgeclipError, match="test split not found"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    with pytest.raises(EdgeclipError, match="no split 'val'"):
        load_dataset(f"fashion-mnist:{tmp_path}", "val")


# ---------------------------------------------------------------- subsets and calibration

def _indexed(labels) -> LabeledImages:
    """A set whose image i is a 2x2 grey image of value i, so a subset shows which images it kept."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1
    return LabeledImages("fake", "test", [f"c{k}" for k in range(n_classes)], labels, "mem",
                         lambda i: Image.fromarray(np.full((2, 2), i, np.uint8)))


def _ids(ds: LabeledImages) -> list[int]:
    return [int(np.asarray(ds.image(i))[0, 0]) for i in range(len(ds))]


def test_take_returns_the_first_n():
    ds = _indexed(np.arange(20) % 4)
    first = ds.take(7)
    assert len(first) == 7 and _ids(first) == list(range(7))
    assert first.labels.tolist() == (np.arange(7) % 4).tolist()
    assert ds.take(None) is ds and ds.take(100) is ds
    assert _ids(first.take(3)) == [0, 1, 2]


def test_stratified_is_even_and_deterministic():
    labels = np.repeat(np.arange(3), 10)  # 3 classes x 10 images, grouped by class
    ds = _indexed(labels)
    sub = ds.stratified(6)
    assert len(sub) == 6 and np.bincount(sub.labels, minlength=3).tolist() == [2, 2, 2]
    ids = _ids(sub)
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert [int(labels[i]) for i in ids] == sub.labels.tolist()  # images and labels stay paired
    assert _ids(ds.stratified(6)) == ids  # reproducible
    assert sorted(np.bincount(ds.stratified(7).labels, minlength=3).tolist()) == [2, 2, 3]
    assert {tuple(_ids(ds.stratified(6, seed=s))) for s in range(5)} != {tuple(ids)}  # the seed matters
    assert ds.stratified(30) is ds and ds.stratified(99) is ds


def test_stratified_with_unbalanced_classes():
    labels = np.array([0] + [1] * 10 + [2] * 2)  # class 0 has a single image
    ds = _indexed(labels)
    sub = ds.stratified(5)
    assert len(sub) == 5
    assert np.bincount(sub.labels, minlength=3).tolist() == [1, 2, 2]
    assert np.bincount(ds.stratified(8).labels, minlength=3).tolist() == [1, 5, 2]


def test_calibration_must_not_be_the_eval_folder(tmp_path, monkeypatch):
    val = _make_pets(tmp_path / "val")
    train = _make_pets(tmp_path / "train")
    with pytest.raises(EdgeclipError, match="evaluation folder"):
        load_calibration(f"folder:{val}", 4, eval_spec=f"folder:{val}")
    with pytest.raises(EdgeclipError, match="evaluation folder"):
        load_calibration(f"folder:{val}/", 4, eval_spec=f"folder:{tmp_path}/train/../val")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(EdgeclipError, match="evaluation folder"):
        load_calibration("folder:~/val", 4, eval_spec=f"folder:{val}")
    calib = load_calibration(f"folder:{train}", 4, eval_spec=f"folder:{val}")
    assert len(calib) == 4 and calib.split == "calib" and Path(calib.source) == train
    assert set(calib.labels.tolist()) == {0, 1, 2}


def test_calibration_from_fashion_mnist_train_split(tmp_path):
    (test_x, _), (train_x, train_y) = _write_fmnist(tmp_path)
    calib = load_calibration(f"fashion-mnist:{tmp_path}", 10, eval_spec=f"fashion-mnist:{tmp_path}")
    assert calib.split == "train" and len(calib) == 10
    assert np.bincount(calib.labels, minlength=10).tolist() == [1] * 10  # one per class
    train_rows = {x.tobytes() for x in train_x}
    test_rows = {x.tobytes() for x in test_x}
    for i in range(len(calib)):
        px = np.asarray(calib.image(i)).tobytes()
        assert px in train_rows and px not in test_rows
    again = load_calibration(f"fashion-mnist:{tmp_path}", 10)
    assert np.array_equal(_pixels(again), _pixels(calib))


def test_calibration_size_must_be_positive(tmp_path):
    _write_fmnist(tmp_path)
    for size in (0, -3):
        with pytest.raises(EdgeclipError, match="positive"):
            load_calibration(f"fashion-mnist:{tmp_path}", size)


# ---------------------------------------------------------------- specs

def test_unknown_dataset_kind_lists_the_valid_ones():
    with pytest.raises(EdgeclipError, match="unknown dataset 'mnist2'") as e:
        load_dataset("mnist2")
    for kind in LOADERS:
        assert kind in str(e.value)
    with pytest.raises(EdgeclipError, match="unknown dataset"):
        load_calibration("imagenette:/x", 4)


def test_parse_spec():
    assert parse_spec("fashion-mnist") == ("fashion-mnist", None)
    assert parse_spec("FMNIST:/d") == ("fashion-mnist", "/d")
    assert parse_spec("fashion_mnist:/d") == ("fashion-mnist", "/d")
    assert parse_spec("folder:/a:b") == ("folder", "/a:b")
    assert parse_spec(" Cifar100 :/c") == ("cifar100", "/c")


# ---------------------------------------------------------------- Preprocess vs torchvision

def _torchvision_reference(resize: int, crop: int):
    tv = pytest.importorskip("torchvision.transforms")
    return tv.Compose([
        tv.Resize(resize, interpolation=tv.InterpolationMode.BICUBIC),
        tv.CenterCrop(crop),
        lambda im: im.convert("RGB"),
        tv.ToTensor(),
        tv.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ])


def _assert_close(a: torch.Tensor, b: torch.Tensor):
    assert a.dtype == torch.float32 and a.shape == b.shape
    assert float((a - b).abs().max()) <= 1e-6


def test_preprocess_grayscale_matches_torchvision():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), mode="L")
    pre = Preprocess(size=32)
    out = pre(im)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and pre.input_shape == (3, 32, 32)
    assert bool(torch.isfinite(out).all())
    # grey input: the three channels differ only by their mean/std
    std, mean = torch.tensor(OPENAI_CLIP_STD), torch.tensor(OPENAI_CLIP_MEAN)
    unnorm = out * std[:, None, None] + mean[:, None, None]
    assert float((unnorm[0] - unnorm[1]).abs().max()) < 1e-5
    _assert_close(out, _torchvision_reference(32, 32)(im))


def test_preprocess_non_square_rgb_matches_torchvision():
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 40, 3), dtype=np.uint8))  # 40 wide, 60 tall
    assert im.size == (40, 60)
    out = Preprocess(size=32)(im)
    assert out.shape == (3, 32, 32)
    _assert_close(out, _torchvision_reference(32, 32)(im))
    wide = im.transpose(Image.Transpose.TRANSPOSE)  # 60 wide, 40 tall
    _assert_close(Preprocess(size=32)(wide), _torchvision_reference(32, 32)(wide))


def test_preprocess_crop_pct_matches_torchvision():
    im = Image.fromarray(np.random.default_rng(2).integers(0, 256, (60, 40, 3), dtype=np.uint8))
    out = Preprocess(size=32, crop_pct=0.875)(im)
    assert out.shape == (3, 32, 32)
    _assert_close(out, _torchvision_reference(int(32 / 0.875), 32)(im))
    gray = Image.fromarray(np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8), mode="L")
    _assert_close(Preprocess(size=32, crop_pct=0.875)(gray), _torchvision_reference(36, 32)(gray))


def test_preprocess_already_at_size_is_only_normalised():
    arr = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = Preprocess(size=32)(Image.fromarray(arr))
    expect = (arr.astype(np.float32) / 255.0 - np.asarray(OPENAI_CLIP_MEAN, np.float32)) / np.asarray(OPENAI_CLIP_STD, np.float32)
    assert np.array_equal(out.numpy(), expect.transpose(2, 0, 1))


def test_tensors_batches_the_preprocessed_images(tmp_path):
    (test_x, _), _ = _write_fmnist(tmp_path, n_test=3, n_train=3)
    ds = load_dataset(f"fashion-mnist:{tmp_path}")
    pre = Preprocess(size=32)
    seen = []
    batch = ds.tensors(pre, progress=seen.append)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32 and seen == [1, 1, 1]
    for i in range(3):
        assert torch.equal(batch[i], pre(Image.fromarray(test_x[i])))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/edgeclip-pwned",))


def test_cifar100_pickle_cannot_run_code(tmp_path):
    import pickle

    folder = _make_cifar(tmp_path)
    (folder / "test").write_bytes(pickle.dumps({"data": _Evil()}))
    with pytest.raises(EdgeclipError, match="is not a plain CIFAR data pickle .*refusing to load posix.system"):
        load_cifar100(str(folder), "test")
    assert not Path("/tmp/edgeclip-pwned").exists()
