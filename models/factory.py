"""One factory for every model edgeclip loads: the built-in model, open_clip, local folders, timm.

A model is named by one spec string, so the CLI flag, the Python API and the manifest's
``source`` all use the same words and any artifact can be rebuilt from its manifest:

* ``edgeclip-fmnist`` (default) -- the project's own small CLIP trained on Fashion-MNIST;
* ``ViT-B-32`` (any ``open_clip.list_models()`` name) with ``pretrained`` = a tag (``openai``,
  ``laion2b_s34b_b79k``...), ``none`` for random init, or a local checkpoint file;
* a folder (or ``local-dir:<folder>``) with ``open_clip_config.json`` + ``open_clip_model.safetensors``;
* ``hf-hub:<org>/<repo>`` -- an open_clip model on the Hugging Face hub;
* ``timm:<name>`` (e.g. ``timm:deit_small_patch16_224``) with ``pretrained`` = ``hub``, ``none`` or a file.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgeclip.errors import EdgeclipError, missing_dependency

from .facts import ModelFacts
from .preprocess import Preprocess
from .wrappers import DEFAULT_TEMPLATES, ImageClassifier, ImageEncoder, TextEncoder, zero_shot_head

BUILTIN_NAME = "edgeclip-fmnist"
BUILTIN_DIR = Path(__file__).resolve().parent / "weights" / "edgeclip_fmnist"
RANDOM_INIT_SEED = 0
RANDOM_WEIGHTS_NOTE = "random weights: numbers prove plumbing and timing only, not accuracy"


@dataclass
class LoadedModel:
    """A loaded model plus everything needed to wrap it and to record where it came from."""

    family: str                      # the loader: "open_clip" or "timm" (a record; the subclass does the wrapping)
    model: nn.Module
    preprocess: Preprocess
    source: dict                     # {"model", "pretrained", "kwargs"}: load_model(model, pretrained, **kwargs) rebuilds it
    random_weights: bool
    tokenizer: Callable | None = None
    tokenizer_info: dict | None = None
    templates: list[str] | None = None
    classes: list[str] | None = None
    prompt_names: list[str] | None = None

    def facts(self, task: str, classes: list[str] | None = None) -> ModelFacts:
        """The manifest facts of this model wrapped for ``task`` (``classes``: the wrapped classifier's)."""
        return ModelFacts(task, list(classes or []) if task == "classifier" else [], self.source, self.random_weights,
                          self.preprocess if task != "text-encoder" else None, self.tokenizer_info)

    def classifier(self, classes: list[str] | None = None, prompt_names: list[str] | None = None,
                   templates: list[str] | None = None) -> ImageClassifier:
        raise NotImplementedError

    def image_encoder(self) -> ImageEncoder:
        raise NotImplementedError

    def text_encoder(self) -> TextEncoder:
        raise EdgeclipError(f"{self.source['model']} has no text tower; text export needs a CLIP model")


@dataclass
class OpenClipLoaded(LoadedModel):
    """An open_clip CLIP: the classifier is the vision tower + a zero-shot head baked from ``prompt_names x templates``."""

    def classifier(self, classes: list[str] | None = None, prompt_names: list[str] | None = None,
                   templates: list[str] | None = None) -> ImageClassifier:
        classes = classes or self.classes
        if not classes:
            raise EdgeclipError("a CLIP classifier needs class names; pass --data (its classes are used) or --labels FILE")
        if prompt_names is None:
            prompt_names = self.prompt_names if (self.classes == list(classes) and self.prompt_names) else list(classes)
        if len(prompt_names) != len(classes):
            raise EdgeclipError(f"{len(prompt_names)} prompt names for {len(classes)} classes; give one per class")
        head = zero_shot_head(self.model, self.tokenizer, prompt_names, templates or self.templates or DEFAULT_TEMPLATES)
        return ImageClassifier(self.model.visual, head, self.preprocess, classes, True, self.random_weights).eval()

    def image_encoder(self) -> ImageEncoder:
        return ImageEncoder(self.model.visual, self.preprocess, self.random_weights).eval()

    def text_encoder(self) -> TextEncoder:
        return TextEncoder(self.model, self.tokenizer_info or {}, self.random_weights).eval()


@dataclass
class TimmLoaded(LoadedModel):
    """A timm image model: the classifier is the model with its own head; the encoder its pooled features."""

    def classifier(self, classes: list[str] | None = None, prompt_names: list[str] | None = None,
                   templates: list[str] | None = None) -> ImageClassifier:
        classes = classes or self.classes or [str(i) for i in range(self.model.num_classes)]
        if len(classes) != self.model.num_classes and self.random_weights and hasattr(self.model, "reset_classifier"):
            # random init: a head of the right size loses nothing (seeded, so verify / bench rebuild the same one)
            with torch.random.fork_rng():
                torch.manual_seed(RANDOM_INIT_SEED)
                self.model.reset_classifier(len(classes))
        if len(classes) != self.model.num_classes:
            raise EdgeclipError(f"{len(classes)} class names given but the timm head has {self.model.num_classes} outputs; "
                                "pass labels that match the head or a checkpoint fine-tuned on your classes, or export "
                                "its features with --task image-encoder")
        return ImageClassifier(self.model, nn.Identity(), self.preprocess, classes, False, self.random_weights)

    def image_encoder(self) -> ImageEncoder:
        return ImageEncoder(_TimmFeatures(self.model), self.preprocess, self.random_weights).eval()


class _TimmFeatures(nn.Module):
    """A timm model's pooled pre-logits features (the embedding its head sees)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def load_model(model: str = BUILTIN_NAME, pretrained: str | None = None, *, tokenizer_optional: bool = False,
               **kwargs: Any) -> LoadedModel:
    """Load a model by spec (see module docstring); ``kwargs`` go to the model constructor (timm / open_clip).
    ``tokenizer_optional``: an image-only use (the image encoder) goes on without a tokenizer that cannot be
    loaded here (SigLIP's comes from the Hugging Face hub and needs ``transformers``), saying so in ``source``."""
    spec = (model or BUILTIN_NAME).strip()
    if spec == BUILTIN_NAME:
        if not (BUILTIN_DIR / "open_clip_config.json").is_file():
            raise EdgeclipError(f"built-in weights missing from {BUILTIN_DIR}; reinstall edgeclip")
        loaded = _load_open_clip_dir(BUILTIN_DIR)
        loaded.source = {"model": BUILTIN_NAME, "pretrained": None}
        return loaded
    if spec.startswith("timm:"):
        return _load_timm(spec[5:], pretrained, kwargs)
    if spec.startswith("local-dir:"):
        return _load_open_clip_dir(Path(spec[10:]).expanduser(), tokenizer_optional)
    if Path(spec).expanduser().is_dir():
        return _load_open_clip_dir(Path(spec).expanduser(), tokenizer_optional)
    if "/" in spec and not spec.startswith("hf-hub:"):
        raise EdgeclipError(f"model folder {spec} does not exist; pass a folder with open_clip_config.json, "
                            "an open_clip name like ViT-B-32, or timm:<name>")
    return _load_open_clip_named(spec, pretrained, kwargs, tokenizer_optional)


@contextlib.contextmanager
def _seeded():
    """Random init from a fixed seed, so the baseline rebuilt from a manifest is the model that was exported;
    the caller's RNG state is restored afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip logs "initialized randomly" as a warning; our outputs say it instead
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            yield
    finally:
        root.setLevel(level)


def _open_clip():
    import open_clip

    return open_clip


def _tokenizer_info(tokenizer, context_length: int | None) -> dict:
    info = {"class": type(tokenizer).__name__,
            "context_length": int(getattr(tokenizer, "context_length", context_length or 77) or context_length or 77)}
    for key, attr in (("vocab_size", "vocab_size"), ("sot_token_id", "sot_token_id"), ("eot_token_id", "eot_token_id")):
        if getattr(tokenizer, attr, None) is not None:
            info[key] = int(getattr(tokenizer, attr))
    if hasattr(tokenizer, "encoder") and "vocab_size" not in info:
        info["vocab_size"] = len(tokenizer.encoder)
    info["pad_token_id"] = 0
    info["pooling"] = "argmax (EOT token has the highest id)" if info["class"] == "SimpleTokenizer" else "model-specific"
    return info


def _preprocess_from_open_clip(model: nn.Module, fallback: dict | None = None) -> Preprocess:
    cfg = dict(getattr(model.visual, "preprocess_cfg", None) or fallback or {})
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise EdgeclipError(f"non-square input size {tuple(size)} is not supported yet; use a square model")
        size = size[0]
    return Preprocess(size=int(size), mean=tuple(cfg.get("mean", Preprocess.mean)), std=tuple(cfg.get("std", Preprocess.std)),
                      interpolation=cfg.get("interpolation", "bicubic"))


def _finish_open_clip(model, tokenizer, source: dict, random_weights: bool, folder: Path | None = None) -> LoadedModel:
    """``tokenizer`` is a tokenizer, or the reason it could not be loaded (an image-only use goes on without it)."""
    if isinstance(tokenizer, str):
        source, tokenizer = {**source, "tokenizer_not_loaded": tokenizer}, None
    model.eval()
    meta = {}
    if folder is not None and (folder / "templates.json").is_file():
        meta = json.loads((folder / "templates.json").read_text())
    ctx = getattr(model, "context_length", None)
    return OpenClipLoaded("open_clip", model, _preprocess_from_open_clip(model), source, random_weights,
                       tokenizer, _tokenizer_info(tokenizer, ctx) if tokenizer is not None else None,
                       meta.get("templates"), meta.get("classes"),
                       meta.get("prompt_names"))


def load_error_detail(e: Exception) -> str:
    """The one line of a checkpoint-loading exception a user can act on: the first mismatched tensor or
    missing key when torch names one, else the exception's first line."""
    import re

    text = str(e).strip()
    m = re.search(r"size mismatch for ([\w.]+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) from checkpoint, "
                  r"the shape in current model is (torch\.Size\(\[[^\]]*\]\))", text)
    if m:
        return f"{m.group(1)} is {m.group(2)[11:-1]} in the checkpoint but {m.group(3)[11:-1]} in the model"
    m = re.search(r"(Missing|Unexpected) key\(s\) in state_dict: ((?:\"[^\"]+\",? ?){1,3})", text)
    if m:
        return f"{m.group(1).lower()} keys {m.group(2).strip().rstrip(',')}"
    return f"{type(e).__name__}: {(text.splitlines() or [''])[0][:200]}"


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when it is not one (the loader that reads it next says what is wrong)."""
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _load_open_clip_dir(folder: Path, tokenizer_optional: bool = False) -> LoadedModel:
    oc = _open_clip()
    cfg = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise EdgeclipError(f"model folder {folder} does not exist; pass a folder with open_clip_config.json and open_clip_model.safetensors")
    if not cfg.is_file():
        raise EdgeclipError(f"{folder} has no open_clip_config.json; a local model folder needs open_clip_config.json + open_clip_model.safetensors")
    weights = [p for p in (folder / "open_clip_model.safetensors", folder / "open_clip_pytorch_model.bin") if p.is_file()]
    if not weights:
        raise EdgeclipError(f"{folder} has no open_clip_model.safetensors; put the checkpoint beside open_clip_config.json")
    trunk = (_read_json(cfg).get("model_cfg") or {}).get("vision_cfg", {}).get("timm_model_name")
    if trunk:
        import timm

        if not timm.is_model(trunk):
            raise EdgeclipError(f"{cfg} builds its image tower from the timm model {trunk!r}, which timm does not know in "
                                "this process; import the module that registers it (timm.models.register_model) first, "
                                "or name a timm model")
    try:
        model = oc.create_model(f"local-dir:{folder}", load_weights=True)
    except Exception as e:  # a bad file raises many types: SafetensorError, EOFError, UnpicklingError, IndexError...
        raise EdgeclipError(f"cannot load {weights[0]} into the architecture of {cfg.name} ({load_error_detail(e)}); "
                            "the checkpoint must be complete and match the config (same widths, layers and vocab)") from None
    tokenizer = _tokenizer(oc, f"local-dir:{folder}", tokenizer_optional)
    return _finish_open_clip(model, tokenizer, {"model": str(folder.resolve()), "pretrained": None}, False, folder)


def _load_open_clip_named(name: str, pretrained: str | None, kwargs: dict, tokenizer_optional: bool = False) -> LoadedModel:
    oc = _open_clip()
    if not name.startswith("hf-hub:") and name not in oc.list_models():
        close = difflib.get_close_matches(name, oc.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise EdgeclipError(f"unknown model {name!r}; {hint} (or timm:<name>, or a folder)")
    tag = (pretrained or "none").strip()
    random_weights = tag.lower() == "none"
    if random_weights:
        with _seeded():
            try:
                model = oc.create_model(name, pretrained=None, **kwargs)
            except ModuleNotFoundError as e:
                raise missing_dependency(e.name or str(e), name) from None
    elif Path(tag).expanduser().suffix in (".safetensors", ".bin", ".pt", ".pth") or "/" in tag:
        path = Path(tag).expanduser()
        if not path.is_file():
            raise EdgeclipError(f"checkpoint file {path} does not exist; pass an existing .safetensors/.bin/.pt file or a pretrained tag")
        try:
            model = oc.create_model(name, pretrained=str(path), **kwargs)
        except Exception as e:  # a bad file raises many types: SafetensorError, EOFError, UnpicklingError, IndexError...
            raise EdgeclipError(f"cannot load checkpoint {path} into {name} ({load_error_detail(e)}); "
                                "check that it was saved from the same architecture and is not truncated") from None
    else:
        if not name.startswith("hf-hub:"):
            tags = oc.list_pretrained_tags_by_model(name)
            if tag not in tags:
                raise EdgeclipError(f"unknown pretrained tag {tag!r} for {name}; use one of {', '.join(tags) or 'none'} "
                                    "or a local checkpoint file, or 'none' for random weights")
        try:
            model = oc.create_model(name, pretrained=tag if not name.startswith("hf-hub:") else None, **kwargs)
        except Exception as e:  # network / hub failures come in many types; all mean "could not fetch"
            where = (oc.get_pretrained_cfg(name, tag) or {}).get("hf_hub") if not name.startswith("hf-hub:") else name[7:]
            raise EdgeclipError(
                f"could not download {name} weights '{tag}' from {where or 'its hub'} ({type(e).__name__}: offline?); "
                f"download open_clip_model.safetensors on a connected machine and pass --pretrained /path/to/open_clip_model.safetensors") from None
    tokenizer = _tokenizer(oc, name, tokenizer_optional)
    return _finish_open_clip(model, tokenizer, {"model": name, "pretrained": tag, "kwargs": kwargs}, random_weights)


def _tokenizer(oc, name: str, optional: bool = False):
    """open_clip's tokenizer for ``name``; SigLIP-style models use a Hugging Face tokenizer, which needs the
    ``transformers`` package (an extra) and, the first time, its files from the hub.  ``optional``: return
    the one-line reason instead of raising it."""
    try:
        return oc.get_tokenizer(name)
    except ModuleNotFoundError as e:
        err = missing_dependency(e.name or str(e), f"the tokenizer of {name}")
    except Exception as e:  # hub / file errors come in many types
        err = EdgeclipError(f"could not load the tokenizer of {name} ({type(e).__name__}: offline?); its files come from the "
                            "Hugging Face hub: run once on a connected machine (they are cached) or point HF_HOME at a "
                            "cache that has them")
    if optional:
        return str(err)
    raise err from None


def _load_timm(name: str, pretrained: str | None, kwargs: dict) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise EdgeclipError(f"unknown timm model {name!r}; " + (f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"))
    tag = (pretrained or "none").strip()
    random_weights = tag.lower() == "none"
    try:
        if random_weights:
            with _seeded():
                model = timm.create_model(name, pretrained=False, **kwargs)
        elif tag.lower() == "hub":
            model = timm.create_model(name, pretrained=True, **kwargs)
        else:
            path = Path(tag).expanduser()
            if not path.is_file():
                raise EdgeclipError(f"checkpoint file {path} does not exist; pass an existing checkpoint, 'hub' to download, or 'none'")
            model = timm.create_model(name, pretrained=False, **kwargs)
            timm.models.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except EdgeclipError:
        raise
    except RuntimeError as e:
        raise EdgeclipError(f"cannot load {tag} into timm:{name} ({load_error_detail(e)}); "
                            "the checkpoint must come from the same architecture") from None
    except Exception as e:
        if tag.lower() != "hub":
            raise EdgeclipError(f"cannot read checkpoint {tag} ({type(e).__name__}: {str(e)[:120]}); is it a complete torch/safetensors file?") from None
        raise EdgeclipError(f"could not download timm:{name} weights from the Hugging Face hub ({type(e).__name__}: offline?); "
                            "save the checkpoint on a connected machine and pass --pretrained /path/to/model.safetensors") from None
    model.eval()
    # the size the model was built for (img_size=...), not the size of its pretrained config
    built = getattr(getattr(model, "patch_embed", None), "img_size", None) or kwargs.get("img_size")
    if isinstance(built, int):
        built = (built, built)
    cfg = resolve_data_config({"input_size": (3, *map(int, built))} if built else {}, model=model)
    pre = Preprocess(size=int(cfg["input_size"][-1]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                     interpolation=cfg.get("interpolation", "bicubic"), crop_pct=float(cfg.get("crop_pct", 1.0)))
    classes = None
    if getattr(model, "num_classes", 0) == 1000:
        try:
            from timm.data import ImageNetInfo

            classes = list(ImageNetInfo().label_descriptions())
        except Exception:  # label files are optional in some timm builds
            classes = None
    return TimmLoaded("timm", model, pre, {"model": f"timm:{name}", "pretrained": tag, "kwargs": kwargs}, random_weights,
                       classes=classes)


def open_clip_config(name: str) -> dict | None:
    """The config open_clip knows for architecture ``name`` in this process (one a caller registered at run
    time with ``open_clip.add_model_config`` included), to hand to a worker process that must rebuild it."""
    try:
        from open_clip.factory import _MODEL_CONFIGS
    except ImportError:
        return None
    return _MODEL_CONFIGS.get(name)


def timm_architecture(spec: str) -> str | None:
    """The timm model a model spec builds: ``timm:<name>``, or the image tower named in a local open_clip
    folder's config (SigLIP, MobileCLIP and other CustomTextCLIPs build theirs from timm)."""
    if spec.startswith("timm:"):
        return spec[5:]
    folder = Path(spec[10:] if spec.startswith("local-dir:") else spec).expanduser()
    cfg = folder / "open_clip_config.json"
    if not spec or not cfg.is_file():
        return None
    return ((_read_json(cfg).get("model_cfg") or {}).get("vision_cfg") or {}).get("timm_model_name")


def timm_registrar(name: str) -> tuple[str, str] | None:
    """(module, the folder it imports from) that registered timm model ``name`` at run time, when that is not
    timm itself: a caller's ``timm.models.register_model`` exists only in the caller's process, so a worker that
    rebuilds the model imports the same module first.  None for timm's own models and for a script's
    ``__main__`` (re-running a script in a worker would re-run what it does)."""
    import sys

    try:
        from timm.models._registry import _model_entrypoints
    except ImportError:
        return None
    fn = _model_entrypoints.get(name)
    module = getattr(fn, "__module__", None) or ""
    loaded = sys.modules.get(module)
    if fn is None or module.startswith("timm.") or module == "__main__" or not getattr(loaded, "__file__", None):
        return None
    return module, str(Path(loaded.__file__).resolve().parents[module.count(".")])


def import_timm_registrar(module: str, root: str) -> None:
    """The worker side of ``timm_registrar``."""
    import importlib
    import sys

    if root not in sys.path:
        sys.path.append(root)
    importlib.import_module(module)


def register_open_clip_config(name: str, cfg: dict) -> None:
    """Make ``name`` buildable in this process (the worker side of ``open_clip_config``); an existing entry wins.
    The one place edgeclip touches open_clip's private registry: ``add_model_config`` only reads files."""
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS.setdefault(name, cfg)
