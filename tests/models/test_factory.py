"""edgeclip.models.factory / wrappers against plain open_clip and timm, on tiny models (no network, no downloads).

Every number is checked against a hand computation with the upstream library, so the tests catch a
wrapper that runs but computes something else (wrong pooling, missing normalisation, scale not folded).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

from edgeclip.errors import EdgeclipError  # noqa: E402
from edgeclip.models import factory  # noqa: E402
from edgeclip.models.factory import LoadedModel, load_model  # noqa: E402
from edgeclip.models.wrappers import DEFAULT_TEMPLATES, ImageClassifier, ImageEncoder, TextEncoder  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)

VISION_CFG = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1, "head_width": 32}
TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
MODEL_CFG = {"embed_dim": 32, "vision_cfg": VISION_CFG, "text_cfg": TEXT_CFG}
# deliberately not the CLIP defaults, so the test proves they are read from the folder's config
MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]
PREPROCESS_CFG = {"size": 32, "mean": MEAN, "std": STD, "interpolation": "bilinear"}

META = {"classes": ["T-shirt/top", "Trouser", "Bag"],
        "prompt_names": ["t-shirt or top", "trouser", "bag"],
        "templates": ["a photo of a {c}.", "a grayscale photo of the {c}."]}

TIMM_NAME = "vit_tiny_patch16_224"
TIMM_KW = dict(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2, num_classes=5)

TINY_NAME = "edgeclip_test_tiny"


# ----------------------------------------------------------------------------------------- helpers

def _tiny_clip(seed: int = 0, vision_width: int = 64, head_width: int = 32) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=32, vision_cfg={**VISION_CFG, "width": vision_width, "head_width": head_width},
                           text_cfg=dict(TEXT_CFG))
    with torch.no_grad():  # a non-default scale, so a wrapper that forgets it (or uses 1/0.07) is caught
        model.logit_scale.fill_(2.0)
    return model.eval()


def _write_folder(folder: Path, model: torch.nn.Module | None, model_cfg: dict = MODEL_CFG,
                  meta: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}))
    if model is not None:
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        safetensors_torch.save_file(sd, str(folder / "open_clip_model.safetensors"))
    if meta is not None:
        (folder / "templates.json").write_text(json.dumps(meta))
    return folder


def _reference(state_dict: dict) -> torch.nn.Module:
    """Plain open_clip CLIP with the saved weights: the ground truth the wrappers are compared with."""
    ref = open_clip.CLIP(**json.loads(json.dumps(MODEL_CFG)))
    ref.load_state_dict(state_dict, strict=True)
    return ref.eval()


def _zero_shot_weights(ref, tokenizer, names, templates) -> torch.Tensor:
    """The standard recipe: per class mean of normalised template embeddings, renormalised -> [D, C]."""
    cols = []
    with torch.no_grad():
        for n in names:
            emb = ref.encode_text(tokenizer([t.format(c=n) for t in templates]), normalize=True)
            cols.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(cols, 1)


def _images(n: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny open_clip CLIP saved in the local-folder format (+ templates.json); returns (folder, state_dict)."""
    model = _tiny_clip(seed=0)
    folder = _write_folder(tmp_path_factory.mktemp("oc") / "tiny_clip", model, meta=META)
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def loaded_folder(clip_folder) -> LoadedModel:
    return load_model(str(clip_folder[0]))


@pytest.fixture(scope="module")
def tiny_registered(tmp_path_factory):
    """A tiny architecture registered under an open_clip name (the ``name + pretrained`` route)."""
    d = tmp_path_factory.mktemp("cfg")
    cfg = d / f"{TINY_NAME}.json"
    cfg.write_text(json.dumps(MODEL_CFG))
    open_clip.add_model_config(cfg)
    assert TINY_NAME in open_clip.list_models()
    return TINY_NAME


@pytest.fixture(scope="module")
def timm_ckpt(tmp_path_factory):
    torch.manual_seed(3)
    model = timm.create_model(TIMM_NAME, pretrained=False, **TIMM_KW).eval()
    path = tmp_path_factory.mktemp("timm") / "vit_tiny.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


# --------------------------------------------------------------------- 1. local open_clip folder

@pytest.mark.parametrize("prefix", ["", "local-dir:"])
def test_local_folder_loads_with_and_without_prefix(clip_folder, prefix):
    folder, sd = clip_folder
    loaded = load_model(prefix + str(folder))
    assert loaded.family == "open_clip"
    assert loaded.random_weights is False
    assert loaded.source == {"model": str(folder.resolve()), "pretrained": None}
    got = loaded.model.state_dict()
    assert set(got) >= set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    assert not loaded.model.training
    # templates.json is picked up
    assert loaded.classes == META["classes"]
    assert loaded.prompt_names == META["prompt_names"]
    assert loaded.templates == META["templates"]


def test_local_folder_classifier_matches_hand_zero_shot(clip_folder, loaded_folder):
    folder, sd = clip_folder
    ref = _reference(sd)
    tok = open_clip.SimpleTokenizer(context_length=16)
    classes = ["cat", "dog", "car", "ship"]
    prompt_names = ["small cat", "big dog", "red car", "old ship"]
    templates = ["a photo of a {c}.", "a drawing of the {c}, close up."]

    clf = loaded_folder.classifier(classes, prompt_names, templates)
    assert isinstance(clf, ImageClassifier) and not clf.training
    assert clf.classes == classes and clf.preprocess == loaded_folder.preprocess

    x = _images(4)
    with torch.no_grad():
        got = clf(x)
        w = _zero_shot_weights(ref, tok, prompt_names, templates)
        want = ref.logit_scale.exp() * ref.encode_image(x, normalize=True) @ w
    assert got.shape == (4, 4)
    torch.testing.assert_close(got, want, **TOL)
    # the prompt names, not the class names, went into the prompts
    with torch.no_grad():
        w_cls = _zero_shot_weights(ref, tok, classes, templates)
        wrong = ref.logit_scale.exp() * ref.encode_image(x, normalize=True) @ w_cls
    assert not torch.allclose(got, wrong, atol=1e-4)


def test_local_folder_classifier_defaults_from_templates_json(clip_folder, loaded_folder):
    _, sd = clip_folder
    ref = _reference(sd)
    tok = open_clip.SimpleTokenizer(context_length=16)
    x = _images(3, seed=5)
    with torch.no_grad():
        got = loaded_folder.classifier()(x)
        want = ref.logit_scale.exp() * ref.encode_image(x, normalize=True) @ _zero_shot_weights(
            ref, tok, META["prompt_names"], META["templates"])
        torch.testing.assert_close(got, want, **TOL)
        # other classes: their own names go into the prompts, with the folder's templates
        got2 = loaded_folder.classifier(["bag", "hat"])(x)
        want2 = ref.logit_scale.exp() * ref.encode_image(x, normalize=True) @ _zero_shot_weights(
            ref, tok, ["bag", "hat"], META["templates"])
        torch.testing.assert_close(got2, want2, **TOL)


def test_default_templates_used_without_any(clip_folder, tmp_path):
    folder = _write_folder(tmp_path / "no_meta", _tiny_clip(seed=0))  # same weights, no templates.json
    loaded = load_model(str(folder))
    assert loaded.templates is None and loaded.classes is None
    ref = _reference(clip_folder[1])
    tok = open_clip.SimpleTokenizer(context_length=16)
    x = _images(2)
    with torch.no_grad():
        got = loaded.classifier(["cat", "dog"])(x)
        want = ref.logit_scale.exp() * ref.encode_image(x, normalize=True) @ _zero_shot_weights(
            ref, tok, ["cat", "dog"], DEFAULT_TEMPLATES)
    torch.testing.assert_close(got, want, **TOL)
    with pytest.raises(EdgeclipError, match="class names"):
        loaded.classifier()
    with pytest.raises(EdgeclipError, match="prompt names"):
        loaded.classifier(["cat", "dog"], ["cat"])


def test_local_folder_image_encoder(clip_folder, loaded_folder):
    ref = _reference(clip_folder[1])
    enc = loaded_folder.image_encoder()
    assert isinstance(enc, ImageEncoder) and not enc.training
    x = _images(4, seed=2)
    with torch.no_grad():
        got = enc(x)
        want = ref.encode_image(x, normalize=True)
    assert got.shape == (4, 32)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(4), **TOL)


def test_local_folder_text_encoder_eot_pooling(clip_folder, loaded_folder):
    ref = _reference(clip_folder[1])
    enc = loaded_folder.text_encoder()
    assert isinstance(enc, TextEncoder) and not enc.training
    # the text encoder holds the text tower only
    assert not any(n.startswith("visual") for n, _ in enc.named_parameters())
    captions = ["a photo of a cat.", "dog", "a blurry low resolution photo of the large red car on a road"]
    tokens = loaded_folder.tokenizer(captions)
    assert tokens.shape == (3, 16) and tokens.dtype == torch.long
    eot = tokens.argmax(-1)
    assert len(set(eot.tolist())) == 3  # EOT sits at a different position in each row
    with torch.no_grad():
        got = enc(tokens)
        want = ref.encode_text(tokens, normalize=True)
        # what pooling the last position would give instead: must differ, so the check has teeth
        x = ref.token_embedding(tokens) + ref.positional_embedding
        x = ref.ln_final(ref.transformer(x, attn_mask=ref.attn_mask))
        last = F.normalize(x[:, -1] @ ref.text_projection, dim=-1)
    assert got.shape == (3, 32)
    torch.testing.assert_close(got, want, **TOL)
    assert not torch.allclose(got, last, atol=1e-3)


def test_local_folder_tokenizer_info_and_preprocess(loaded_folder):
    info = loaded_folder.tokenizer_info
    assert info["context_length"] == 16
    assert info["vocab_size"] == 49408
    assert info["sot_token_id"] == 49406 and info["eot_token_id"] == 49407
    assert info["pad_token_id"] == 0
    assert info["pooling"].startswith("argmax")
    assert loaded_folder.text_encoder().tokenizer_info == info

    pre = loaded_folder.preprocess
    assert pre.size == 32
    assert pre.mean == pytest.approx(tuple(MEAN)) and pre.std == pytest.approx(tuple(STD))
    assert pre.interpolation == "bilinear"
    assert pre.crop_pct == 1.0
    # the record produces model-ready input: a 28x28 grayscale image -> [3,32,32], normalised with the config
    img = Image.fromarray(np.full((28, 28), 255, np.uint8))
    t = pre(img)
    assert t.shape == (3, 32, 32)
    torch.testing.assert_close(t[:, 16, 16], (1 - torch.tensor(MEAN)) / torch.tensor(STD), **TOL)


def test_local_folder_source_rebuilds_same_model(loaded_folder):
    src = loaded_folder.source
    again = load_model(src["model"], src.get("pretrained"), **(src.get("kwargs") or {}))
    x = _images(2, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(again.image_encoder()(x), loaded_folder.image_encoder()(x), rtol=0, atol=0)


def test_folder_path_with_tilde(clip_folder, monkeypatch):
    folder, _ = clip_folder
    monkeypatch.setenv("HOME", str(folder.parent))
    loaded = load_model(f"~/{folder.name}")
    assert loaded.source["model"] == str(folder.resolve())


# ------------------------------------------------------------------------------------- 2. errors

def test_error_folder_without_config(tmp_path):
    folder = tmp_path / "empty_model"
    folder.mkdir()
    for spec in (str(folder), f"local-dir:{folder}"):
        with pytest.raises(EdgeclipError, match="open_clip_config.json") as e:
            load_model(spec)
        assert "has no open_clip_config.json" in str(e.value)


def test_error_missing_folder(tmp_path):
    with pytest.raises(EdgeclipError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"))
    with pytest.raises(EdgeclipError, match="does not exist"):
        load_model(f"local-dir:{tmp_path / 'nope'}")


def test_error_folder_without_weights(tmp_path):
    folder = _write_folder(tmp_path / "cfg_only", None)
    with pytest.raises(EdgeclipError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "no open_clip_model.safetensors" in msg and str(folder) in msg


def test_error_weights_of_other_architecture(tmp_path):
    other = _tiny_clip(seed=0, vision_width=48, head_width=16)  # saved under the width-64 config
    folder = _write_folder(tmp_path / "mismatch", other)
    with pytest.raises(EdgeclipError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "match the config" in msg and "same widths" in msg
    assert "open_clip_model.safetensors" in msg
    assert "\n" not in msg  # one line for the CLI, not a dump of every mismatched key


def test_error_timm_tower_unknown_in_this_process_names_it(tmp_path):
    """A CustomTextCLIP folder whose image tower is a timm model nobody registered here: the error names the
    timm model and the fix, not 'the checkpoint must match the config' (the checkpoint is fine)."""
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 32, "custom_text": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": "my_private_vit_tiny"}, "text_cfg": {}}}))
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(EdgeclipError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "timm model 'my_private_vit_tiny'" in msg and "register_model" in msg and "\n" not in msg


def test_timm_registrar_is_the_registering_module_not_timm(tmp_path, monkeypatch):
    """A worker can rebuild a model whose timm tower a caller's module registered: the registrar is that module
    and the folder it imports from; timm's own models and a script's __main__ have none."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "arch.py").write_text("from timm.models import register_model\n"
                                 "from timm.models.vision_transformer import _create_vision_transformer\n"
                                 "@register_model\n"
                                 "def userpkg_vit_for_registrar_test(pretrained=False, **kw):\n"
                                 "    return _create_vision_transformer('vit_tiny_patch16_224', depth=1, **kw)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("userpkg.arch")
    assert factory.timm_registrar("userpkg_vit_for_registrar_test") == ("userpkg.arch", str(tmp_path.resolve()))
    assert factory.timm_registrar("vit_tiny_patch16_224") is None
    assert factory.timm_architecture("timm:vit_tiny_patch16_224") == "vit_tiny_patch16_224"


def test_error_truncated_safetensors_in_folder(tmp_path):
    folder = _write_folder(tmp_path / "trunc", _tiny_clip(seed=0))
    f = folder / "open_clip_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeclipError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "open_clip_model.safetensors" in msg
    assert "cannot load" in msg


def test_error_garbage_torch_file_in_folder(tmp_path):
    folder = _write_folder(tmp_path / "garbage", None)
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"this is not a checkpoint")
    with pytest.raises(EdgeclipError, match="cannot load .*open_clip_pytorch_model.bin"):
        load_model(str(folder))


@pytest.mark.parametrize("kind", ["half.safetensors", "half.pt", "empty.pt", "garbage.bin"])
def test_error_broken_checkpoint_for_named_model(tiny_registered, tmp_path, kind):
    f = tmp_path / kind
    sd = {k: v.contiguous() for k, v in _tiny_clip().state_dict().items()}
    if f.suffix == ".safetensors":
        safetensors_torch.save_file(sd, str(f))
    else:
        torch.save(sd, f)
    data = f.read_bytes()
    f.write_bytes({"half": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint at all"}[f.stem])
    with pytest.raises(EdgeclipError, match="truncated") as e:
        load_model(tiny_registered, str(f))
    assert f"cannot load checkpoint {f} into {TINY_NAME}" in str(e.value)


def test_error_unknown_open_clip_name_suggests():
    with pytest.raises(EdgeclipError) as e:
        load_model("ViT-B-33")
    msg = str(e.value)
    assert "unknown model 'ViT-B-33'" in msg
    assert "did you mean" in msg and "ViT-B-32" in msg


def test_error_unknown_pretrained_tag_lists_tags(no_network):
    with pytest.raises(EdgeclipError) as e:
        load_model("ViT-B-32", pretrained="laion9b_nonexistent")
    msg = str(e.value)
    assert "unknown pretrained tag 'laion9b_nonexistent' for ViT-B-32" in msg
    for tag in open_clip.list_pretrained_tags_by_model("ViT-B-32"):
        assert tag in msg
    assert "openai" in msg and "laion2b_s34b_b79k" in msg


@pytest.mark.parametrize("name", ["ViT-B-32", TINY_NAME])
def test_error_missing_checkpoint_file(tiny_registered, tmp_path, name):
    missing = tmp_path / "nowhere" / "open_clip_model.safetensors"
    with pytest.raises(EdgeclipError, match="does not exist") as e:
        load_model(name, pretrained=str(missing))
    assert str(missing) in str(e.value)
    # a bare file name with a checkpoint suffix is a path, not a tag
    with pytest.raises(EdgeclipError, match="does not exist"):
        load_model(name, pretrained="missing_ckpt.pt")


def test_error_checkpoint_of_other_architecture_for_named_model(tiny_registered, tmp_path):
    f = tmp_path / "other.safetensors"
    other = _tiny_clip(seed=0, vision_width=48, head_width=16)
    safetensors_torch.save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(f))
    with pytest.raises(EdgeclipError, match="same architecture"):
        load_model(tiny_registered, str(f))


# ----------------------------------------------------------------------- 3. offline hub download



def test_offline_open_clip_tag_download_fails_clearly(offline_hub):
    with pytest.raises(EdgeclipError) as e:
        load_model("RN50", pretrained="openai")
    msg = str(e.value)
    assert "could not download RN50 weights 'openai'" in msg
    assert "timm/resnet50_clip.openai" in msg  # where it would have come from
    assert "--pretrained /path/" in msg
    assert not any(offline_hub.rglob("*.pt")) and not any(offline_hub.rglob("*.bin"))


def test_offline_timm_hub_download_fails_clearly(offline_hub):
    with pytest.raises(EdgeclipError) as e:
        load_model(f"timm:{TIMM_NAME}", "hub", **TIMM_KW)
    msg = str(e.value)
    assert f"could not download timm:{TIMM_NAME}" in msg
    assert "--pretrained /path/" in msg


# ------------------------------------------------------------------------------ 4. random init

def test_named_random_init(tiny_registered):
    loaded = load_model(tiny_registered, "none")
    assert loaded.family == "open_clip"
    assert loaded.random_weights is True
    assert loaded.source == {"model": TINY_NAME, "pretrained": "none", "kwargs": {}}
    assert loaded.preprocess.size == 32
    assert loaded.tokenizer_info["context_length"] == 16
    clf = loaded.classifier(["a", "b"], templates=["{c}"])
    enc = loaded.image_encoder()
    assert clf.random_weights is True and enc.random_weights is True
    assert loaded.text_encoder().random_weights is True
    assert factory.RANDOM_WEIGHTS_NOTE.startswith("random weights")
    with torch.no_grad():
        assert clf(_images(2)).shape == (2, 2)
    # None means random too
    assert load_model(tiny_registered).random_weights is True


def test_named_with_checkpoint_file_reproduces_saved_model(tiny_registered, tmp_path):
    saved = _tiny_clip(seed=7)
    ckpt = tmp_path / "tiny.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, str(ckpt))
    loaded = load_model(tiny_registered, str(ckpt))
    assert loaded.random_weights is False
    assert loaded.source["pretrained"] == str(ckpt)
    x = _images(3, seed=4)
    tokens = loaded.tokenizer(["a photo of a cat.", "a dog"])
    tok = open_clip.SimpleTokenizer(context_length=16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_encoder()(x), saved.encode_image(x, normalize=True), **TOL)
        torch.testing.assert_close(loaded.text_encoder()(tokens), saved.encode_text(tokens, normalize=True), **TOL)
        want = saved.logit_scale.exp() * saved.encode_image(x, normalize=True) @ _zero_shot_weights(
            saved, tok, ["cat", "dog"], ["a photo of a {c}."])
        torch.testing.assert_close(loaded.classifier(["cat", "dog"], templates=["a photo of a {c}."])(x), want, **TOL)
    # and it is not just any init: a fresh random model disagrees
    rnd = load_model(tiny_registered, "none")
    with torch.no_grad():
        assert not torch.allclose(rnd.image_encoder()(x), loaded.image_encoder()(x), atol=1e-3)


def test_named_with_torch_checkpoint_file(tiny_registered, tmp_path):
    saved = _tiny_clip(seed=8)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": saved.state_dict()}, ckpt)
    loaded = load_model(tiny_registered, str(ckpt))
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_encoder()(x), saved.encode_image(x, normalize=True), **TOL)


# ------------------------------------------------------------------------------------------ 5. timm

def _timm_logits_and_features(model, x):
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        return model(x), feats


def test_timm_random_init(no_network):
    loaded = load_model(f"timm:{TIMM_NAME}", "none", **TIMM_KW)
    assert loaded.family == "timm"
    assert loaded.random_weights is True
    assert loaded.source == {"model": f"timm:{TIMM_NAME}", "pretrained": "none", "kwargs": TIMM_KW}
    assert loaded.model.num_classes == 5 and not loaded.model.training
    assert loaded.tokenizer is None and loaded.classes is None


def test_timm_checkpoint_roundtrip_and_wrappers(timm_ckpt):
    path, saved = timm_ckpt
    loaded = load_model(f"timm:{TIMM_NAME}", str(path), **TIMM_KW)
    assert loaded.random_weights is False
    x = _images(3, seed=6)
    want_logits, want_feats = _timm_logits_and_features(saved, x)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), want_logits, rtol=0, atol=0)

        clf = loaded.classifier(["a", "b", "c", "d", "e"])
        assert clf.classes == ["a", "b", "c", "d", "e"] and clf.normalize_features is False
        torch.testing.assert_close(clf(x), want_logits, **TOL)
        # no names -> indices
        assert loaded.classifier().classes == ["0", "1", "2", "3", "4"]

        enc = loaded.image_encoder()
        emb = enc(x)
    assert emb.shape == (3, 64)  # pre-logits width = embed_dim, not num_classes
    torch.testing.assert_close(emb, F.normalize(want_feats, dim=-1), **TOL)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), **TOL)
    # the timm head on the (unnormalised) pre-logits is exactly the classifier
    with torch.no_grad():
        torch.testing.assert_close(saved.head(want_feats), want_logits, **TOL)


def test_timm_wrong_class_count(timm_ckpt):
    loaded = load_model(f"timm:{TIMM_NAME}", str(timm_ckpt[0]), **TIMM_KW)
    with pytest.raises(EdgeclipError, match="3 class names given but the timm head has 5 outputs"):
        loaded.classifier(["a", "b", "c"])


def test_timm_has_no_text_encoder(timm_ckpt):
    loaded = load_model(f"timm:{TIMM_NAME}", str(timm_ckpt[0]), **TIMM_KW)
    with pytest.raises(EdgeclipError, match="no text tower"):
        loaded.text_encoder()


def test_timm_unknown_name():
    with pytest.raises(EdgeclipError, match="unknown timm model 'vit_tiny_patch16_225'") as e:
        load_model("timm:vit_tiny_patch16_225", "none")
    assert "vit_tiny_patch16_224" in str(e.value)


def test_timm_missing_checkpoint(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(EdgeclipError, match="does not exist") as e:
        load_model(f"timm:{TIMM_NAME}", str(missing), **TIMM_KW)
    assert str(missing) in str(e.value)


def test_timm_checkpoint_of_other_architecture(timm_ckpt):
    other = {**TIMM_KW, "embed_dim": 32}
    with pytest.raises(EdgeclipError, match="same architecture"):
        load_model(f"timm:{TIMM_NAME}", str(timm_ckpt[0]), **other)


def test_timm_truncated_checkpoint(timm_ckpt, tmp_path):
    data = timm_ckpt[0].read_bytes()
    f = tmp_path / "half.safetensors"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeclipError, match="complete"):
        load_model(f"timm:{TIMM_NAME}", str(f), **TIMM_KW)


# ---------------------------------------------------------------------- 6. the preprocess record

def test_timm_preprocess_record_matches_model(timm_ckpt):
    from timm.data import resolve_data_config

    loaded = load_model(f"timm:{TIMM_NAME}", str(timm_ckpt[0]), **TIMM_KW)
    pre = loaded.preprocess
    cfg = resolve_data_config({}, model=loaded.model)
    # crop_pct / mean / std / interpolation from timm's data config
    assert pre.crop_pct == pytest.approx(cfg["crop_pct"]) and pre.crop_pct == pytest.approx(0.9)
    assert pre.mean == pytest.approx(tuple(cfg["mean"])) and pre.std == pytest.approx(tuple(cfg["std"]))
    assert pre.interpolation == cfg["interpolation"]
    # the size is the size the model was built for (img_size=32), not the 224 of the pretrained config
    assert pre.size == 32
    assert loaded.classifier().preprocess == pre
    # the record's output feeds the model: resize 35 (32/0.9), centre-crop 32
    img = Image.fromarray((np.arange(40 * 50 * 3) % 251).astype(np.uint8).reshape(40, 50, 3))
    x = pre(img).unsqueeze(0)
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert loaded.classifier()(x).shape == (1, 5)


def test_timm_default_size_without_override(no_network):
    loaded = load_model(f"timm:{TIMM_NAME}", "none", patch_size=32, embed_dim=32, depth=1, num_heads=2, num_classes=2)
    assert loaded.preprocess.size == 224
    assert loaded.preprocess.crop_pct == pytest.approx(0.9)


def test_random_timm_head_takes_the_class_count_and_rebuilds_identically():
    """``--pretrained none`` with a dataset of 3 classes: a random 1000-way head would refuse; a seeded 3-way
    head loses nothing and is the same when verify / bench rebuild the model.  Trained heads still refuse."""
    from dataclasses import replace

    from edgeclip.errors import EdgeclipError
    from edgeclip.models.factory import load_model

    kw = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2, depth=1)
    heads = [load_model("timm:deit_tiny_patch16_224", "none", **kw).classifier(["a", "b", "c"]).backbone.head.weight
             for _ in range(2)]
    assert heads[0].shape[0] == 3 and torch.equal(heads[0], heads[1])
    trained = replace(load_model("timm:deit_tiny_patch16_224", "none", **kw), random_weights=False)
    with pytest.raises(EdgeclipError, match="has 1000 outputs.*--task image-encoder"):
        trained.classifier(["a", "b", "c"])


def test_chunks_shrink_with_the_square_of_the_token_count():
    from edgeclip.runtimes.base import chunk_size

    assert chunk_size((10, 3, 32, 32)) == chunk_size((10, 3, 224, 224)) == chunk_size((10, 77)) == 32
    assert chunk_size((10, 3, 336, 336)) == 6 and chunk_size((10, 3, 448, 448)) == 2 and chunk_size((10, 3, 518, 518)) == 1
