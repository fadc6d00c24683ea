"""Labelled image sets for accuracy, and calibration sets that never overlap them.

A dataset is named by a spec string ``kind[:path]`` (``fashion-mnist``,
``cifar100:/data/cifar-100-python``, ``imagenet:/data/val``, ``folder:/data/pets``);
the same spec works from the CLI, the Python API and a recipe file.  Every set
exposes PIL images, integer labels and class names, so one preprocessing path
serves all of them.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgeclip.errors import EdgeclipError

from .preprocess import Preprocess

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# How the class names read inside a caption ("a photo of a t-shirt or top.").
FASHION_MNIST_PROMPT_NAMES = [
    "t-shirt or top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class LabeledImages:
    """Images addressed by index, with labels and class names; pixels are decoded lazily."""

    name: str
    split: str
    classes: list[str]
    labels: np.ndarray
    source: str
    _get: Callable[[int], Image.Image] = field(repr=False)
    prompt_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return self._get(int(i))

    def take(self, n: int | None) -> "LabeledImages":
        """The first ``n`` images (all of them when ``n`` is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return self.select(np.arange(n))

    def stratified(self, n: int, seed: int = 0) -> "LabeledImages":
        """``n`` images spread evenly over the classes, drawn reproducibly (a smaller ``n`` draws a subset of a
        larger one: the same per-class order, taken round-robin)."""
        if n >= len(self):
            return self
        return self.select(self.stratified_index(n, seed))

    def stratified_index(self, n: int, seed: int = 0) -> np.ndarray:
        n = min(n, len(self))
        rng = np.random.default_rng(seed)
        per_class = [np.flatnonzero(self.labels == c) for c in range(len(self.classes))]
        per_class = [rng.permutation(ix) for ix in per_class if len(ix)]
        picked, k = [], 0
        while len(picked) < n:
            for ix in per_class:
                if k < len(ix) and len(picked) < n:
                    picked.append(ix[k])
            k += 1
        return np.sort(np.asarray(picked, dtype=np.int64))

    def select(self, index: Sequence[int]) -> "LabeledImages":
        index = np.asarray(index, dtype=np.int64)
        get = self._get
        return LabeledImages(self.name, self.split, self.classes, self.labels[index], self.source,
                             lambda i: get(int(index[i])), self.prompt_names)

    def tensors(self, preprocess: Preprocess, progress: Callable | None = None) -> torch.Tensor:
        """All images preprocessed into one float batch [N,3,H,W]."""
        out = torch.empty((len(self), *preprocess.input_shape), dtype=torch.float32)
        for i in range(len(self)):
            out[i] = preprocess(self.image(i))
            if progress is not None:
                progress(1)
        return out

    def spec(self) -> str:
        return f"{self.name}:{self.source}"


def _array_getter(images: np.ndarray) -> Callable[[int], Image.Image]:
    return lambda i: Image.fromarray(images[i])


# ---------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as e:  # a partly downloaded .gz ends mid-stream
        raise EdgeclipError(f"{path} is truncated or corrupt ({e}); re-download it") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise EdgeclipError(f"{path} is not an IDX uint8 file; point the dataset at the Fashion-MNIST *-ubyte(.gz) files")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise EdgeclipError(f"{path} is truncated (its header is cut short); re-download it")
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise EdgeclipError(f"{path} is truncated ({arr.size} of {int(np.prod(dims))} values); re-download it")
    return arr.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for d in (root, root / "raw", root / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def fashion_mnist_roots() -> list[Path]:
    """Where Fashion-MNIST is looked for when no path is given, in order."""
    roots = []
    if os.environ.get("EDGECLIP_FASHION_MNIST"):
        roots.append(Path(os.environ["EDGECLIP_FASHION_MNIST"]))
    here = Path(__file__).resolve().parent
    for base in (Path.cwd(), here.parent, here.parent.parent):
        roots.append((base / ".." / "shared" / "data" / "fashion_mnist").resolve())
    roots.append(DEBIAN_FASHION_MNIST)
    return roots


def _has_fashion_mnist(root: Path) -> bool:
    return (root / "test.npz").is_file() or _find_idx(root, "t10k-images-idx3-ubyte") is not None


def load_fashion_mnist(path: str | None, split: str) -> LabeledImages:
    """``split``: ``test`` (10k official test images) or ``train`` (the train split; in the npz
    layout only its 1,000-image stratified ``calib.npz`` subset exists)."""
    if path:
        root = Path(path).expanduser()
        if not root.exists():
            raise EdgeclipError(f"Fashion-MNIST folder {root} does not exist; pass the folder holding test.npz or the *-ubyte.gz files")
        candidates = [root]
    else:
        candidates = [r for r in fashion_mnist_roots() if r.exists()]
    if split == "train":
        for root in candidates:  # the full 60k split wherever it is, before any 1k calib.npz subset
            imgs, labs = _find_idx(root, "train-images-idx3-ubyte"), _find_idx(root, "train-labels-idx1-ubyte")
            if imgs and labs:
                return _fmnist(_read_idx(imgs), _read_idx(labs), "train", root, imgs.name)
        for root in candidates:
            if (root / "calib.npz").is_file():
                d = np.load(root / "calib.npz")
                return _fmnist(d["images"], d["labels"], "train", root, "calib.npz")
    elif split == "test":
        for root in candidates:
            if (root / "test.npz").is_file():
                d = np.load(root / "test.npz")
                return _fmnist(d["images"], d["labels"], "test", root, "test.npz")
            imgs, labs = _find_idx(root, "t10k-images-idx3-ubyte"), _find_idx(root, "t10k-labels-idx1-ubyte")
            if imgs and labs:
                return _fmnist(_read_idx(imgs), _read_idx(labs), "test", root, imgs.name)
    else:
        raise EdgeclipError(f"Fashion-MNIST has no split {split!r}; use 'test' or 'train'")
    where = path or ", ".join(str(r) for r in fashion_mnist_roots())
    raise EdgeclipError(
        f"Fashion-MNIST {split} split not found (looked in {where}); "
        "install it with 'apt-get install dataset-fashion-mnist' or pass --data fashion-mnist:/path/to/folder")


def _fmnist(images: np.ndarray, labels: np.ndarray, split: str, root: Path, file: str) -> LabeledImages:
    """Refuses arrays that are not Fashion-MNIST: PIL would read [N,28,28,2] as grey+alpha and carry on."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise EdgeclipError(f"{root / file} images have shape {tuple(images.shape)} ({images.dtype}); Fashion-MNIST is "
                            "uint8 [N, 28, 28] grayscale -- re-create the file or point --data/--calib-data at the right one")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(images) or (len(labels) and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES))):
        raise EdgeclipError(f"{root / file} has {len(images)} images but {len(labels)} labels (or labels outside 0-9); "
                            "re-create the file")
    return LabeledImages("fashion-mnist", split, list(FASHION_MNIST_CLASSES), labels, str(root),
                         _array_getter(np.asarray(images, dtype=np.uint8)), list(FASHION_MNIST_PROMPT_NAMES))


# ---------------------------------------------------------------- CIFAR-100

class _DataOnlyUnpickler(pickle.Unpickler):
    """CIFAR ships pickles; a pickle can run any code.  Only numpy arrays and plain containers may be built."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_data_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _DataOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise EdgeclipError(f"{path} is not a plain CIFAR data pickle ({e}); edgeclip does not run code from data files") from None
    except (EOFError, ValueError) as e:
        raise EdgeclipError(f"{path} is truncated or corrupt ({type(e).__name__}); re-download cifar-100-python") from None


def load_cifar100(path: str | None, split: str) -> LabeledImages:
    """torchvision's ``cifar-100-python`` folder (pickled numpy arrays, as CIFAR ships them)."""
    if not path:
        raise EdgeclipError("CIFAR-100 needs a folder: pass --data cifar100:/path/to/cifar-100-python")
    root = Path(path).expanduser()
    if (root / "cifar-100-python").is_dir():
        root = root / "cifar-100-python"
    if split not in ("train", "test"):
        raise EdgeclipError(f"CIFAR-100 has no split {split!r}; use 'test' or 'train'")
    fpath, meta = root / split, root / "meta"
    if not fpath.is_file() or not meta.is_file():
        raise EdgeclipError(f"{root} is not a cifar-100-python folder (needs '{split}' and 'meta'); pass the extracted cifar-100-python folder")
    d = _load_data_pickle(fpath)
    classes = _load_data_pickle(meta)["fine_label_names"]
    images = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(d["fine_labels"], dtype=np.int64)
    return LabeledImages("cifar100", split, list(classes), labels, str(root), _array_getter(np.ascontiguousarray(images)),
                         [c.replace("_", " ") for c in classes])


# ---------------------------------------------------------------- folders

def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (UnidentifiedImageError, OSError) as e:
        raise EdgeclipError(f"cannot read image {path} ({e.__class__.__name__}); remove it or convert it to PNG/JPEG") from None


def _folder(name: str, root: Path, split: str, class_dirs: list[str], classes: list[str]) -> LabeledImages:
    paths, labels = [], []
    for label, d in enumerate(class_dirs):
        for p in sorted((root / d).iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(p)
                labels.append(label)
    if not paths:
        raise EdgeclipError(f"no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) under the class folders of {root}; check the path")
    return LabeledImages(name, split, classes, np.asarray(labels, dtype=np.int64), str(root),
                         lambda i: _open_image(paths[i]))


def load_image_folder(path: str | None, split: str) -> LabeledImages:
    """``root/<class name>/<image>``: classes are the sorted sub-folder names."""
    if not path:
        raise EdgeclipError("an image folder needs a path: pass --data folder:/path/with/one/sub-folder/per/class")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EdgeclipError(f"image folder {root} does not exist; pass a folder with one sub-folder per class")
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise EdgeclipError(f"{root} has no class sub-folders; put each class's images in root/<class name>/")
    return _folder("folder", root, split, class_dirs, [c.replace("_", " ") for c in class_dirs])


def load_imagenet(path: str | None, split: str) -> LabeledImages:
    """ImageNet-1k in folder layout (``val/<wnid>/*.JPEG``) plus ``imagenet_class_index.json``
    (``{"0": ["n01440764", "tench"], ...}``) in the folder or its parent."""
    if not path:
        raise EdgeclipError("ImageNet needs a folder: pass --data imagenet:/path/to/val (with imagenet_class_index.json beside it)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EdgeclipError(f"ImageNet folder {root} does not exist; pass the val/ folder with one sub-folder per wnid")
    index_file = next((p for p in (root / "imagenet_class_index.json", root.parent / "imagenet_class_index.json") if p.is_file()), None)
    if index_file is None:
        raise EdgeclipError(f"imagenet_class_index.json not found in {root} or its parent; put the class index file there")
    index = json.loads(index_file.read_text())
    order = sorted(index, key=int)
    wnids = [index[k][0] for k in order]
    classes = [index[k][1].replace("_", " ") for k in order]
    missing = [w for w in wnids if not (root / w).is_dir()]
    if len(missing) == len(wnids):
        raise EdgeclipError(f"{root} has none of the class index's wnid folders (e.g. {wnids[0]}/); is it the val folder in class-folder layout?")
    present = [w for w in wnids if (root / w).is_dir()]
    ds = _folder("imagenet", root, split, present, classes)
    # labels must index the full 1000-class head, not the present folders
    remap = np.asarray([wnids.index(w) for w in present], dtype=np.int64)
    ds.labels = remap[ds.labels]
    return ds


LOADERS: dict[str, Callable[[str | None, str], LabeledImages]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar100": load_cifar100,
    "imagenet": load_imagenet,
    "folder": load_image_folder,
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind == "fmnist":
        kind = "fashion-mnist"
    if kind not in LOADERS:
        raise EdgeclipError(f"unknown dataset {spec!r}; use one of {', '.join(k + '[:path]' for k in LOADERS)}")
    return kind, (path or None)


def load_dataset(spec: str, split: str = "test", limit: int | None = None) -> LabeledImages:
    """A labelled evaluation set; ``limit`` keeps the first N images (stable across runs)."""
    kind, path = parse_spec(spec)
    ds = LOADERS[kind](path, split)
    if len(ds) == 0:
        raise EdgeclipError(f"dataset {spec!r} ({split}) is empty; check the path")
    return ds.take(limit)


def load_calibration(spec: str, size: int, eval_spec: str | None = None) -> LabeledImages:
    """Calibration images from a train split or a separate folder, never from the evaluation split.

    ``fashion-mnist`` and ``cifar100`` give their train split; ``folder:`` / ``imagenet:`` give
    that folder, which must not be the evaluation folder.
    """
    if size <= 0:
        raise EdgeclipError(f"calibration size must be positive (got {size}); pass --calib-size 256 or similar")
    return _calibration_source(spec, eval_spec).stratified(size, seed=0)


def _calibration_source(spec: str, eval_spec: str | None) -> LabeledImages:
    kind, path = parse_spec(spec)
    if eval_spec is not None and kind in ("folder", "imagenet"):
        ekind, epath = parse_spec(eval_spec)
        if epath and path and Path(epath).expanduser().resolve() == Path(path).expanduser().resolve():
            raise EdgeclipError(f"calibration folder {path} is the evaluation folder; calibrate on a train folder so accuracy is not measured on calibration images")
    split = "train" if kind in ("fashion-mnist", "cifar100") else "calib"
    return LOADERS[kind](path, split)


def load_calibration_holdout(spec: str, size: int, holdout: int, eval_spec: str | None = None
                             ) -> tuple[LabeledImages, LabeledImages]:
    """(calibration images, up to ``holdout`` more from the same source for accuracy control).  The first part
    is exactly ``load_calibration(spec, size)`` (a smaller stratified draw is a subset of a larger one), so
    holding images out changes no calibration."""
    if size <= 0:
        raise EdgeclipError(f"calibration size must be positive (got {size}); pass --calib-size 256 or similar")
    ds = _calibration_source(spec, eval_spec)
    first, both = ds.stratified_index(size), ds.stratified_index(size + holdout)
    return ds.select(first), ds.select(np.setdiff1d(both, first))
