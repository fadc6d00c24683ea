"""Every user mistake the CLI can meet: one table, the exact message each gets, the exit code, nothing left behind.

Each case builds its inputs in a fresh folder, runs ``edgeclip`` in-process (offline: any network access
fails the case), and checks that the output ends in exactly one ``Error: ...`` line containing the
expected words, with no traceback, and that ``--out`` holds no artifact and no temp files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import copy_fp32_onnx
from edgeclip.cli import main


@dataclass
class Ctx:
    tmp: Path
    clip: Path          # a valid tiny open_clip folder
    images: str         # folder:<path> dataset, 3 classes
    calib: str          # a second folder dataset
    onnx_pair: Path     # the session's fp32 + int8 tiny .onnx artifacts (read-only: copy before changing)

    @property
    def out(self) -> Path:
        return self.tmp / "out"


def _export(ctx: Ctx, *extra) -> list[str]:
    return ["export", "--model", str(ctx.clip), "--data", ctx.images, "--verify-size", "6", "--out", str(ctx.out), *map(str, extra)]


def _clip_copy(ctx: Ctx, name: str) -> Path:
    import shutil

    d = ctx.tmp / name
    shutil.copytree(ctx.clip, d)
    return d


def _truncated(ctx: Ctx) -> list[str]:
    d = _clip_copy(ctx, "trunc")
    w = d / "open_clip_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return _export(ctx) [:2] + [str(d)] + _export(ctx)[3:]


def _other_arch(ctx: Ctx) -> list[str]:
    d = _clip_copy(ctx, "arch")
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"]["width"] = 32
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    return ["export", "--model", str(d), "--data", ctx.images, "--out", str(ctx.out)]


def _garbage_weights(ctx: Ctx) -> list[str]:
    d = _clip_copy(ctx, "garbage")
    (d / "open_clip_model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    return ["export", "--model", str(d), "--data", ctx.images, "--out", str(ctx.out)]


def _no_config(ctx: Ctx) -> list[str]:
    d = _clip_copy(ctx, "nocfg")
    (d / "open_clip_config.json").unlink()
    return ["export", "--model", str(d), "--data", ctx.images, "--out", str(ctx.out)]


def _labels(ctx: Ctx, text: str) -> list[str]:
    f = ctx.tmp / "labels.txt"
    f.write_text(text)
    return _export(ctx, "--labels", f)


def _folder(ctx: Ctx, name: str, make: Callable[[Path], None]) -> str:
    root = ctx.tmp / name
    root.mkdir()
    make(root)
    return f"folder:{root}"


def _png(path: Path, channels: int = 3, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, channels) if channels > 1 else (size, size)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(path)


def _corrupt_image_folder(root: Path) -> None:
    for c in ("cat", "dog", "car"):
        _png(root / c / "0.png")
    (root / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")


def _non_image_folder(root: Path) -> None:
    for c in ("cat", "dog", "car"):
        (root / c).mkdir()
        (root / c / "notes.txt").write_text("not an image")


def _npz_dataset(ctx: Ctx, calib: np.ndarray) -> str:
    """A fashion-mnist-layout folder whose calibration array is malformed."""
    root = ctx.tmp / "npz"
    root.mkdir()
    rng = np.random.default_rng(0)
    np.savez(root / "test.npz", images=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8), labels=np.arange(20) % 10)
    np.savez(root / "calib.npz", images=calib, labels=np.zeros(len(calib), dtype=np.int64))
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    (root / "classes.json").write_text(json.dumps(classes))
    return f"fashion-mnist:{root}"


def _exported(ctx: Ctx) -> Path:
    """A private copy of a good fp32 .onnx artifact of the tiny CLIP, for the case to damage or misuse."""
    return copy_fp32_onnx(ctx.onnx_pair, ctx.tmp / "arts")


def _tampered(ctx: Ctx) -> list[str]:
    art = _exported(ctx)
    f = art / "model.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    return ["eval", str(art), "--data", ctx.images]


def _truncated_artifact(ctx: Ctx) -> list[str]:
    art = _exported(ctx)
    f = art / "model.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    return ["eval", str(art), "--data", ctx.images]


def _bad_manifest(ctx: Ctx) -> list[str]:
    art = _exported(ctx)
    (art / "manifest.json").write_text("{ not json")
    return ["eval", str(art), "--data", ctx.images]


def _recipe(ctx: Ctx, text: str) -> list[str]:
    f = ctx.tmp / "recipe.toml"
    f.write_text(text)
    return ["export", "--recipe", str(f), "--out", str(ctx.out)]


# (id, argv builder, expected text in the single Error line, exit code)
CASES: list[tuple[str, Callable[[Ctx], list[str]], str, int]] = [
    # models and checkpoints
    ("unknown-model", lambda c: ["export", "--model", "ViT-B-33", "--data", c.images, "--out", c.out], "unknown model 'ViT-B-33'; did you mean ViT-B-32", 2),
    ("unknown-pretrained-tag", lambda c: ["export", "--model", "ViT-B-32", "--pretrained", "openai-v9", "--data", c.images, "--out", c.out],
     "unknown pretrained tag 'openai-v9' for ViT-B-32", 2),
    ("missing-model-folder", lambda c: ["export", "--model", c.tmp / "nope", "--data", c.images, "--out", c.out], "does not exist", 2),
    ("missing-checkpoint-file", lambda c: ["export", "--model", "ViT-B-32", "--pretrained", c.tmp / "w.safetensors", "--data", c.images,
                                                  "--out", c.out],
     "w.safetensors does not exist", 2),
    ("truncated-checkpoint", _truncated, "truncated", 2),
    ("wrong-architecture-checkpoint", _other_arch, "visual.class_embedding is [64] in the checkpoint but [32] in the model", 2),
    ("garbage-checkpoint", _garbage_weights, "cannot load", 2),
    ("folder-without-config", _no_config, "open_clip_config.json", 2),
    ("offline-hub-download", lambda c: ["export", "--model", "RN50", "--pretrained", "openai", "--data", c.images, "--out", c.out],
     "could not download RN50 weights 'openai'", 2),
    ("unknown-timm-model", lambda c: ["export", "--model", "timm:vit_tiny_patch16_225", "--data", c.images, "--out", c.out],
     "unknown timm model 'vit_tiny_patch16_225'", 2),
    # incompatible combinations (refused before loading anything)
    ("backend-of-other-format", lambda c: _export(c, "--format", "onnx", "--quant", "int8", "--backend", "qnnpack"),
     "the qnnpack backend builds TorchScript-lite (.ptl) files, not ONNX (.onnx)", 2),
    ("fp16-on-cpu", lambda c: _export(c, "--quant", "fp16", "--target", "cpu"), "--quant fp16 builds CUDA artifacts", 2),
    ("int8-on-cuda", lambda c: _export(c, "--quant", "int8", "--target", "cuda"), "--quant int8 artifacts run on CPU kernels", 2),
    ("bf16-onnx", lambda c: _export(c, "--quant", "bf16", "--format", "onnx"), "bf16 ONNX is not offered", 2),
    ("fp16-pte", lambda c: _export(c, "--quant", "fp16", "--format", "pte"), "fp16 .pte would need ExecuTorch's CUDA backend", 2),
    ("scheme-without-int8", lambda c: _export(c, "--scheme", "static"), "--scheme static only applies to --quant int8", 2),
    ("calib-data-for-fp32", lambda c: _export(c, "--calib-data", c.calib), "--calib-data is only used by --quant int8", 2),
    ("calib-data-without-smoothquant", lambda c: _export(c, "--quant", "int8", "--smoothquant", "0", "--calib-data", c.calib),
     "--calib-data is only used by --quant int8", 2),
    ("bias-correction-dynamic", lambda c: _export(c, "--quant", "int8", "--bias-correction"),
     "--bias-correction applies to --quant int8 --scheme static --format onnx only", 2),
    ("int4-group-7", lambda c: _export(c, "--quant", "int4", "--group-size", "7"), "--group-size 7 is not available", 2),
    ("max-drop-negative", lambda c: _export(c, "--quant", "int8", "--max-drop", "-1"), "--max-drop is top-1 points", 2),
    ("smoothquant-alpha-1", lambda c: _export(c, "--quant", "int8", "--smoothquant", "1"),
     "--smoothquant must be at least 0 and below 1", 2),
    ("static-onnx-text-encoder", lambda c: _export(c, "--task", "text-encoder", "--quant", "int8", "--scheme", "static"),
     "static int8 ONNX of the text encoder is not supported", 2),
    ("peers-on-cuda", lambda c: ["bench", "--target", "cuda", "--peers", "--out", c.out], "--peers are CPU routes", 2),
    # out-of-range numbers
    ("verify-size-zero", lambda c: _export(c, "--verify-size", "0"), "--verify-size must be between 1 and 100000 (got 0)", 2),
    ("calib-size-zero", lambda c: _export(c, "--quant", "int8", "--scheme", "static", "--calib-size", "0"),
     "--calib-size must be between 1 and 100000 (got 0)", 2),
    ("agreement-above-one", lambda c: _export(c, "--min-agreement", "1.5"), "--min-agreement must be between 0 and 1 (got 1.5)", 2),
    ("cosine-negative", lambda c: _export(c, "--min-cosine", "-0.1"), "--min-cosine must be between 0 and 1 (got -0.1)", 2),
    ("sensitive-float-negative", lambda c: _export(c, "--sensitive-float", "-1"), "--sensitive-float must be between 0 and 1000", 2),
    ("threads-zero", lambda c: ["bench", "--threads", "0", "--out", c.out], "--threads '0': use a positive count or a comma list", 2),
    ("threads-garbage", lambda c: ["bench", "--threads", "1,many", "--out", c.out], "--threads '1,many'", 2),
    ("unknown-quant", lambda c: _export(c, "--quant", "int2"), "Invalid value for '--quant': 'int2' is not one of", 2),
    # calibration sets
    ("calib-is-eval-folder", lambda c: _export(c, "--quant", "int8", "--scheme", "static", "--calib-data", c.images),
     "is the evaluation folder; calibrate on a train folder", 2),
    ("calib-folder-empty", lambda c: _export(c, "--quant", "int8", "--scheme", "static", "--calib-data",
                                            _folder(c, "empty", lambda r: None)), "has no class sub-folders", 2),
    ("calib-folder-non-images", lambda c: _export(c, "--quant", "int8", "--scheme", "static", "--calib-data",
                                                 _folder(c, "txt", _non_image_folder)), "no images (.jpg, .jpeg, .png, .bmp, ...) under the class folders", 2),
    ("calib-wrong-shape", lambda c: _export(c, "--quant", "int8", "--scheme", "static", "--calib-data",
                                           _npz_dataset(c, np.zeros((8, 28, 27, 2), np.uint8))),
     "calib.npz images have shape (8, 28, 27, 2) (uint8); Fashion-MNIST is uint8 [N, 28, 28]", 2),
    ("calib-wrong-channels", lambda c: _export(c, "--quant", "int8", "--scheme", "static", "--calib-data",
                                              _npz_dataset(c, np.zeros((8, 28, 28, 4), np.uint8))),
     "calib.npz images have shape (8, 28, 28, 4) (uint8)", 2),
    # labels
    ("labels-empty", lambda c: _labels(c, "\n\n"), "is empty; give one class name per output", 2),
    ("labels-duplicated", lambda c: _labels(c, "cat\ndog\ncat\n"), "repeats class names (cat)", 2),
    ("labels-missing-file", lambda c: _export(c, "--labels", c.tmp / "none.txt"), "labels file", 2),
    ("labels-count-vs-dataset", lambda c: ["eval", _exported(c), "--data", "fashion-mnist"],
     "has 3 classes but fashion-mnist has 10; evaluate on the dataset it was exported for", 2),
    # datasets
    ("unknown-dataset", lambda c: ["eval", "--data", "mnist2"], "unknown dataset 'mnist2'", 2),
    ("corrupt-image-in-folder", lambda c: ["eval", c.clip, "--data", _folder(c, "corrupt", _corrupt_image_folder)],
     "cannot read image", 2),
    ("missing-dataset-folder", lambda c: ["eval", c.clip, "--data", f"folder:{c.tmp / 'nowhere'}"], "image folder", 2),
    # outputs and artifacts
    ("out-not-writable", lambda c: (c.tmp / "file").write_text("x") and _export(c, "--out", c.tmp / "file" / "sub"),
     "sub (Not a directory); pass a writable --out", 2),
    ("out-is-a-file", lambda c: (c.tmp / "f").write_text("x") and _export(c, "--out", c.tmp / "f"),
     "f is a file; pass a folder as --out", 2),
    ("not-an-artifact", lambda c: ["bench", c.tmp], "; run 'edgeclip export' first or pass artifact folders", 2),
    ("not-an-artifact-file", lambda c: (c.tmp / "m.onnx").write_text("x") and ["bench", c.tmp / "m.onnx"],
     "is not an edgeclip artifact (no manifest.json beside it)", 2),
    ("tampered-artifact", _tampered, "does not match the sha256 in its manifest", 2),
    ("truncated-artifact", _truncated_artifact, "(truncated or replaced); re-export it", 2),
    ("corrupt-manifest", _bad_manifest, "is not a valid edgeclip manifest", 2),
    ("bench-nothing-there", lambda c: ["bench", "--out", c.tmp / "empty-out"], "no artifacts under", 2),
    ("recipe-missing", lambda c: ["export", "--recipe", c.tmp / "r.toml"], "recipe file", 2),
    ("recipe-bad-syntax", lambda c: _recipe(c, "quant = = int8\n"), "cannot parse recipe", 2),
    ("recipe-unknown-key", lambda c: _recipe(c, 'quantt = "int8"\n'), "unknown recipe keys quantt", 2),
    ("recipe-unknown-calib-method", lambda c: _recipe(c, f'model = "{c.clip}"\nquant = "int8"\nscheme = "static"\ncalib_method = "mse2"\n'),
     "unknown --calib-method 'mse2'; use minmax, entropy, percentile or auto", 2),
    # compression: ratios, ranks, block indices and keep rates (refused before any file is written)
    ("svd-ratio-out-of-range", lambda c: _export(c, "--svd", "1.5"), "--svd must be a fraction of each layer's parameters", 2),
    ("svd-two-rules", lambda c: _export(c, "--svd", "0.5", "--svd-rank", "4"), "give one of --svd, --svd-energy, --svd-rank", 2),
    ("svd-rank-saves-nothing", lambda c: _export(c, "--svd-rank", "1000"), "SVD would compress nothing (rank 64 of a", 2),
    ("svd-block-out-of-range", lambda c: _export(c, "--svd", "0.5", "--svd-blocks", "7"),
     "--svd-blocks: block 7 does not exist; the tower has 2 blocks", 2),
    ("svd-unknown-tower", lambda c: _export(c, "--svd", "0.5", "--svd-tower", "audio"), "--svd-tower 'audio' is not a tower", 2),
    ("prune-block-out-of-range", lambda c: _export(c, "--prune-blocks", "vision:5"),
     "block 5 does not exist; the vision tower has 2 blocks", 2),
    ("prune-every-block", lambda c: _export(c, "--prune-blocks", "vision:0,1"), "would remove all 2 blocks of the vision tower", 2),
    ("prune-blocks-bad-spec", lambda c: _export(c, "--prune-blocks", "vision"), "use TOWER:INDICES (vision:4,5)", 2),
    ("mlp-keep-zero", lambda c: _export(c, "--mlp-keep", "0"), "--mlp-keep is the fraction kept", 2),
    ("token-keep-out-of-range", lambda c: _export(c, "--token-keep", "1.5"), "--token-keep is the fraction of patch tokens kept", 2),
    ("token-block-out-of-range", lambda c: _export(c, "--token-keep", "0.5", "--token-blocks", "9"),
     "--token-blocks: block 9 does not exist; the vision tower has 2 blocks", 2),
    ("sparsity-out-of-range", lambda c: _export(c, "--sparsity", "1"), "--sparsity is the fraction of weights zeroed", 2),
    ("heal-without-compression", lambda c: _export(c, "--heal-steps", "10"), "--heal-steps heals a compressed model", 2),
    ("vision-pass-on-text-export", lambda c: _export(c, "--task", "text-encoder", "--svd", "0.5"),
     "this compression changes the vision tower, which a text-encoder export does not contain", 2),
    ("sweep-unknown-series", lambda c: ["sweep", "--series", "svd-everything", "--out", c.out], "unknown sweep series 'svd-everything'", 2),
    ("sweep-eval-size-negative", lambda c: ["sweep", "--eval-size", "-5", "--out", c.out], "--eval-size must be positive", 2),
    ("sweep-rounds-zero", lambda c: ["sweep", "--rounds", "0", "--out", c.out], "--rounds must be positive", 2),
    ("sweep-random-weights", lambda c: ["sweep", "--model", "ViT-B-32", "--pretrained", "none", "--data", c.images,
                                        "--series", "blocks-vision-last", "--out", c.out],
     "a sensitivity sweep of random weights measures nothing", 2),
    ("heal-steps-negative", lambda c: _export(c, "--svd", "0.5", "--heal-steps", "-1"), "--heal-steps must be >= 0", 2),
]


@pytest.mark.parametrize("case_id, build, needle, code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, build, needle, code, tmp_path, tiny_clip_dir, tiny_images, tiny_calib_images, tiny_onnx_pair,
                   offline_hub):
    ctx = Ctx(tmp_path, tiny_clip_dir, tiny_images, tiny_calib_images, tiny_onnx_pair)
    argv = [str(a) for a in build(ctx)]
    if "fashion-mnist" in argv and not _default_fashion_mnist():
        pytest.skip("needs Fashion-MNIST where --data fashion-mnist looks (../shared beside the repository, or "
                    "apt-get install dataset-fashion-mnist)")
    r = CliRunner().invoke(main, argv)
    # what a terminal shows: progress bars (tqdm, leave=False) are erased with \r, so drop their frames
    frames = re.split(r"[\r\n]", r.output)
    lines = [f for f in frames if f.strip() and not re.search(r"\d+%\||it/s\]", f)]
    assert r.exit_code == code, f"{case_id}: exit {r.exit_code}\n{r.output}\n{r.exception!r}"
    assert "Traceback" not in r.output and lines, r.output
    assert lines[-1].startswith("Error: ") and needle in lines[-1], f"{case_id}: got {lines[-1]!r}"
    if not any(line.startswith("Usage:") for line in lines):  # click's own usage errors print their usage block
        assert len(lines) == 1, r.output
    if ctx.out.exists():  # nothing half-written: no artifact, no staging folder, no temp file
        assert not [p for p in ctx.out.rglob("*") if p.is_file()], list(ctx.out.rglob("*"))


def _default_fashion_mnist() -> bool:
    from edgeclip.errors import EdgeclipError
    from edgeclip.models.datasets import load_dataset

    try:
        load_dataset("fashion-mnist", "test", 1)
    except EdgeclipError:
        return False
    return True


def test_table_is_big_enough():
    assert len(CASES) >= 30


def _len_batch_module():
    """A user's module whose forward turns the batch into a Python int (``len(x)``): torch.onnx silently falls back
    to a fixed-batch graph and a trace records the int, so the file would fail at any other batch size."""
    import torch

    from edgeclip.models.preprocess import Preprocess

    class LenBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 32 * 32, 3)
            self.bias = torch.nn.Parameter(torch.zeros(1, 3))
            self.preprocess = Preprocess(size=32)

        def forward(self, x):
            return self.fc(x.flatten(1)) + self.bias.expand(len(x), -1)

    return LenBatch().eval()


@pytest.mark.parametrize("fmt", ["onnx", "ptl", "pte"])
def test_a_forward_that_fixes_the_batch_is_refused_with_the_fix(fmt, tiny_images, tmp_path):
    import edgeclip
    from edgeclip.errors import EdgeclipError

    with pytest.raises(EdgeclipError) as e:
        edgeclip.export(_len_batch_module(), data=tiny_images, labels=["cat", "dog", "car"], formats=(fmt,), verify_size=6,
                        out=str(tmp_path / "out"))
    assert "fixes the batch size" in str(e.value) and "len(x)" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
