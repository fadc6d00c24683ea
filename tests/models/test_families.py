"""Every registered model family on a tiny random config (<= 2 blocks), timm style: load -> int8 export through
the fidelity gate -> block pruning + SVD where they apply -> a compressed int8 export; refusals say why.

Random weights: plumbing and structural checks only (accuracy lives in the fixture tests).  SigLIP's tiny
config is built from the libraries' own classes: an open_clip ``CustomTextCLIP`` config whose image tower is a
registered timm ViT with SigLIP's settings (no class token, MAP pooling), small enough for a test.
"""

import json

import pytest
import torch

import edgeclip
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import CompressRecipe
from edgeclip.models.families import families, family_of, find_backbone
from edgeclip.models.factory import load_model
from edgeclip.models.preprocess import Preprocess

timm = pytest.importorskip("timm")

from conftest import TINY_CFG  # noqa: E402
from tiny_trunks import FASTVIT_KW, MCI_TRUNK, SIGLIP_TRUNK  # noqa: E402  (registers them with timm)

TIMM_KW = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2, depth=2, num_classes=3)
@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    """A local open_clip folder: SigLIP-style CustomTextCLIP (timm trunk, MAP pool, sigmoid bias) with tiny widths."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {"embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
           "vision_cfg": {"image_size": 32, "timm_model_name": SIGLIP_TRUNK, "timm_model_pretrained": False,
                          "timm_pool": "map", "timm_proj": "linear"},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                        "no_causal_mask": True, "pool_type": "last", "proj_bias": True}}
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    d = tmp_path_factory.mktemp("siglip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": 32, "mean": [0.5] * 3,
                                                                                               "std": [0.5] * 3}}))
    return d


@pytest.fixture(scope="module")
def mobileclip_dir(tmp_path_factory):
    """A local open_clip folder shaped like MobileCLIP2-S0 (CustomTextCLIP, FastViT MCi trunk, avg pool, no
    projection) with tiny widths; BatchNorm statistics randomised so that folding them is not a no-op."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {"embed_dim": 32, "custom_text": True,
           "vision_cfg": {"image_size": 64, "timm_model_name": MCI_TRUNK, "timm_model_pretrained": False,
                          "timm_pool": "avg", "timm_proj": None},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                        "no_causal_mask": True}}
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("mobileclip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": 64, "mean": [0.0] * 3,
                                                                                               "std": [1.0] * 3}}))
    return d


# family -> (model spec, pretrained, model kwargs); one tiny model per registered family, more for timm ViT variants
CASES = {
    "open_clip-vit": ("tiny_clip_dir", None, {}),
    "open_clip-timm-vit": ("siglip_dir", None, {}),
    "timm-vit": ("timm:deit_tiny_distilled_patch16_224", "none", TIMM_KW),
    "timm-vit/dinov2-reg": ("timm:vit_small_patch14_reg4_dinov2", "none", {**TIMM_KW, "patch_size": 8}),
    "timm-eva": ("timm:eva02_tiny_patch14_224", "none", {**TIMM_KW, "patch_size": 8}),
    "open_clip-fastvit": ("mobileclip_dir", None, {}),
    "timm-fastvit": ("timm:fastvit_sa12", "none", FASTVIT_KW),
}


def test_every_registered_family_has_a_case():
    assert set(families()) == {k.split("/")[0] for k in CASES}


def _spec(case, request):
    spec, pretrained, kw = CASES[case]
    if not spec.startswith("timm:"):
        spec = str(request.getfixturevalue(spec))
    return spec, pretrained, kw


@pytest.mark.parametrize("case", list(CASES))
def test_family_exports_int8_and_compresses(case, request, tiny_images, tmp_path):
    spec, pretrained, kw = _spec(case, request)
    loaded = load_model(spec, pretrained, **kw)
    fam = family_of(loaded.model)
    assert fam.name == case.split("/")[0]
    vision = fam.towers(loaded.model)["vision"]
    n_blocks = len(vision.blocks)
    common = dict(pretrained=pretrained, model_kwargs=kw, data=tiny_images, verify_size=6, formats=("onnx",))
    # int8 through the ONNX route and its gate, benched; then compressed (block pruning + SVD) int8 through the
    # TorchScript-lite route and its gate (ExecuTorch: the MobileCLIP .pte test below and
    # benchmarks/reproduce_families.sh, whose lowering of every family costs minutes).  Two exports, not three:
    # each ONNX export costs ~3 s even for these tiny models, a .ptl a fraction of that.
    plain = edgeclip.export(spec, quant="int8", out=str(tmp_path / "plain"), **common)[0]
    assert plain.manifest["quantization"]["dtype"] == "int8" and plain.manifest["fidelity"]["mean_cosine"] >= 0.98
    # a bench row: the int8 file, and the fp32 eager model rebuilt from its manifest in a fresh worker process (the
    # family's own load path, from the recorded source) as the baseline it is compared with, in the same rounds
    rep = edgeclip.bench([plain.dir], data=tiny_images, threads=1,
                         timing=edgeclip.TimingConfig(warmup=1, rounds=1, reps_per_round=2, throughput_batch=2))
    eager = next(r for r in rep["rows"] if r.get("baseline"))
    int8 = next(r for r in rep["rows"] if r["artifact"] == plain.name)
    for r in (eager, int8):
        assert "error" not in r, r.get("error")
        assert r["images"] == 18 and r["latency_ms_median"] > 0 and r["throughput_img_s"] > 0
    assert int8["agreement"] >= 80 and abs(int8["top1"] - eager["top1"]) <= 100 / 18 * 3 and "speedup" in int8
    comp = CompressRecipe(svd_ratio=0.5, prune_blocks=["vision:-1"])
    art = edgeclip.export(spec, quant="int8", compress=comp, out=str(tmp_path / "comp"), **{**common, "formats": ("ptl",)})[0]
    assert art.manifest["quantization"]["dtype"] == "int8" and art.manifest["fidelity"]["mean_cosine"] >= 0.98
    if case == "timm-eva":   # the export patch makes EVA call qkv as a Linear, so torch.ao quantizes it too
        assert "qkv_bias_separate" in art.manifest["source"]["export_patches"][0]
        assert "float_linears" not in art.manifest["quantization"]
    report = art.manifest["compression"]
    passes = {p["name"]: p for p in report["passes"]}
    assert passes["prune-blocks:vision"]["params_after"] < passes["prune-blocks:vision"]["params_before"]
    assert passes["svd"]["layers"] and passes["svd"]["params_after"] < passes["svd"]["params_before"]
    assert report["params_after"]["vision"] < report["params_before"]["vision"]
    # the compressed model really lost its last vision block
    from edgeclip.exporter.compress import compress as run_passes

    small, _ = run_passes(loaded.model, CompressRecipe(prune_blocks=["vision:-1"]))
    assert len(family_of(small).towers(small)["vision"].blocks) == n_blocks - 1


@pytest.mark.parametrize("case, flag, needle", [
    ("timm-eva", dict(mlp_keep=0.5), "gated (SwiGLU) MLP"),
    ("timm-eva", dict(token_keep=0.5), "rotary position"),
    ("open_clip-timm-vit", dict(token_keep=0.5), "no class token"),
    ("open_clip-fastvit", dict(mlp_keep=0.5), "1x1 convolutions"),
    ("timm-fastvit", dict(token_keep=0.5), "2-D feature map"),
])
def test_family_refusals_say_why(case, flag, needle, request, tiny_images, tmp_path):
    spec, pretrained, kw = _spec(case, request)
    with pytest.raises(EdgeclipError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        edgeclip.export(spec, pretrained=pretrained, model_kwargs=kw, data=tiny_images, verify_size=6, formats=("onnx",),
                        compress=CompressRecipe(**flag, prune_score="magnitude"), out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_eva_svd_skips_the_qkv_it_cannot_replace_and_says_why():
    from edgeclip.exporter.compress import svd
    from edgeclip.exporter.compress.config import SvdConfig

    model = load_model("timm:eva02_tiny_patch14_224", "none", **{**TIMM_KW, "patch_size": 8}).model
    x = torch.randn(2, 3, 32, 32)
    small, rep = svd.apply(model, SvdConfig(ratio=0.5, towers=("vision",)))
    assert any(s["layer"].endswith("attn_in") and "qkv.weight directly" in s["why"] for s in rep.skipped)
    assert {layer["layer"].split(".")[-1] for layer in rep.layers} >= {"attn_out", "fc2"}
    with torch.no_grad():
        assert small(x).shape == model(x).shape   # the factorised EVA still runs


class FineTuned(torch.nn.Module):
    """The common fine-tuned case: a timm backbone as ``self.backbone`` and a custom head."""

    def __init__(self, backbone: str = "vit_small_patch14_reg4_dinov2", **kw):
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, **{**TIMM_KW, "patch_size": 8, "num_classes": 0, **kw})
        self.head = torch.nn.Linear(64, 3)
        self.preprocess = Preprocess(size=32)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_user_module_wrapping_a_backbone_compresses_through_it(tiny_images, tmp_path):
    torch.manual_seed(0)
    module = FineTuned().eval()
    assert find_backbone(module)[0] == "backbone" and find_backbone(module)[1].name == "timm-vit"
    head = module.head.weight.detach().clone()
    art = edgeclip.export(module, data=tiny_images, labels=["cat", "dog", "car"], formats=("onnx",), verify_size=6,
                          out=str(tmp_path), compress=CompressRecipe(svd_ratio=0.5, prune_blocks=["vision:-1"]))[0]
    report = art.manifest["compression"]
    assert report["backbone"] == {"path": "backbone", "family": "timm-vit"}
    assert report["params_after"]["vision"] < report["params_before"]["vision"]
    assert len(module.backbone.blocks) == 2 and torch.equal(module.head.weight, head)   # the caller's module is untouched


class ToyViT(torch.nn.Module):
    """A user's own ViT (no library): patch embedding, two pre-norm blocks (qkv / proj / fc1 / fc2), class-token head."""

    class Block(torch.nn.Module):
        def __init__(self, d: int, heads: int):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.attn = torch.nn.Module()
            self.attn.qkv, self.attn.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.mlp = torch.nn.Module()
            self.mlp.fc1, self.mlp.fc2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
            x = x + self.attn.proj(a)
            return x + self.mlp.fc2(torch.nn.functional.gelu(self.mlp.fc1(self.norm2(x))))

    def __init__(self, d: int = 32):
        super().__init__()
        self.num_classes = 3
        self.patch = torch.nn.Conv2d(3, d, 8, 8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = torch.nn.ModuleList([ToyViT.Block(d, 2) for _ in range(2)])
        self.head = torch.nn.Linear(d, 3)
        self.preprocess = Preprocess(size=32)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x[:, 0])


def test_a_family_is_one_class_registered_at_run_time(tiny_images, tmp_path, monkeypatch):
    """Adding a family is one module with one registered class: before it, the passes refuse the architecture;
    registered (here at run time, as a user's package would on import), SVD and block pruning go through it."""
    from edgeclip.models.families import base

    class ToyFamily(base.TimmFamily):
        name, summary = "toy-vit", "the tests' toy ViT"

        def matches(self, model):
            return isinstance(model, ToyViT)

        def vision_tower(self, model):
            return base.Tower("vision", model, "blocks", base.BlockLayout(
                linears={"attn_in": ("attn.qkv",), "attn_out": ("attn.proj",), "fc1": ("mlp.fc1",), "fc2": ("mlp.fc2",)},
                parts=("norm1", "attn", "ls1", "norm2", "mlp", "ls2"),
                refusals={"heads": "the toy keeps its head count in the block", "tokens": "the toy has no token slot"}))

        def image_tokens(self, model):
            return 16, 1

    torch.manual_seed(0)
    module = ToyViT().eval()
    common = dict(data=tiny_images, labels=["cat", "dog", "car"], formats=("onnx",), verify_size=6)
    comp = CompressRecipe(svd_ratio=0.5, prune_blocks=["vision:-1"])
    with pytest.raises(EdgeclipError, match="cannot compress a ToyViT"):
        edgeclip.export(module, out=str(tmp_path / "before"), compress=comp, **common)
    monkeypatch.setitem(base._REGISTRY, ToyFamily.name, ToyFamily())   # removed again after the test
    art = edgeclip.export(module, out=str(tmp_path / "after"), compress=comp, quant="int8", **common)[0]
    passes = {p["name"]: p for p in art.manifest["compression"]["passes"]}
    assert passes["prune-blocks:vision"]["params_after"] < passes["prune-blocks:vision"]["params_before"]
    assert passes["svd"]["layers"] and passes["svd"]["params_after"] < passes["svd"]["params_before"]
    assert art.manifest["fidelity"]["mean_cosine"] >= 0.98 and len(module.blocks) == 2   # the caller's module is untouched
    with pytest.raises(EdgeclipError, match="toy has no token slot"):
        edgeclip.export(module, out=str(tmp_path / "tokens"), compress=CompressRecipe(token_keep=0.5), **common)


def test_module_without_a_known_backbone_says_which_families_exist(tiny_images, tmp_path):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    module.preprocess = Preprocess(size=32)
    with pytest.raises(EdgeclipError, match="cannot compress a Sequential: edgeclip's passes know open_clip ViT CLIP"):
        edgeclip.export(module, data=tiny_images, labels=["cat", "dog", "car"], formats=("onnx",), verify_size=6,
                        out=str(tmp_path), compress=CompressRecipe(svd_ratio=0.5))


@pytest.mark.parametrize("case", ["open_clip-fastvit", "timm-fastvit"])
def test_fastvit_ships_folded_branches_and_the_gate_checks_the_fold(case, request, tiny_images, tmp_path):
    """The file holds one convolution per MobileOne / RepMixer block (fewer Conv nodes than the unfolded
    graph), the manifest says so, and fidelity is measured against the unfolded eager model."""
    import onnx

    from edgeclip.models.families import patch_for_export

    spec, pretrained, kw = _spec(case, request)
    loaded = load_model(spec, pretrained, **kw)
    folded, notes = patch_for_export(loaded.model)
    assert notes and "MobileOneBlock" in notes[0] and folded is not loaded.model
    assert any(getattr(m, "reparam_conv", 0) is None for m in loaded.model.modules())   # the caller's model stays unfolded
    x = torch.randn(2, 3, 64, 64) if case == "open_clip-fastvit" else torch.randn(2, 3, 256, 256)
    run = (lambda m: m.encode_image(x)) if case == "open_clip-fastvit" else (lambda m: m(x))
    with torch.no_grad():
        ref, got = run(loaded.model), run(folded)
    assert torch.nn.functional.cosine_similarity(ref, got).min() > 0.9999
    assert patch_for_export(folded) == (folded, [])   # an already folded model is left alone and not re-announced
    art = edgeclip.export(spec, pretrained=pretrained, model_kwargs=kw, task="image-encoder", data=tiny_images,
                          verify_size=4, formats=("onnx",), out=str(tmp_path))[0]
    assert art.manifest["source"]["export_patches"] == notes
    assert art.manifest["fidelity"]["mean_cosine"] >= 0.9999
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(art.file)).graph.node)
    count = lambda m: sum(isinstance(c, torch.nn.Conv2d) for c in m.modules())   # noqa: E731
    assert convs <= count(folded) < count(loaded.model), (convs, count(folded), count(loaded.model))


def test_mobileclip_pte_runs_batches_above_the_bound_lowering_narrowed(mobileclip_dir, tiny_images, tmp_path):
    """(fp32: the bound does not depend on precision, and lowering it is quicker.)  ExecuTorch's to_edge narrows this tower's batch range (1..64 asked, 2..15 planned); the manifest
    records the real bound and the runtime splits the 18 verification images under it, instead of
    ExecuTorch refusing the input (set_inputs error 0x10)."""
    art = edgeclip.export(str(mobileclip_dir), data=tiny_images, verify_size=18, formats=("pte",), out=str(tmp_path))[0]
    q = art.manifest["quantization"]
    assert q["max_batch"] < 18 and q["batch"] == f"dynamic 1..{q['max_batch']}" and "narrowed" in q["batch_note"]
    assert art.manifest["fidelity"]["samples"] == 18 and art.manifest["fidelity"]["mean_cosine"] >= 0.99


def test_eva_int8_pte_builds_because_the_export_patch_calls_qkv_as_a_linear(tiny_images, tmp_path):
    """Unpatched, PT2E quantizes EVA's F.linear(x, qkv.weight, q/v bias) into ops XNNPACK leaves outside its
    delegate and ExecuTorch cannot build the int8 program; timm's qkv_bias_separate (same function) fixes it.
    A user's head on an EVA backbone: random EVA heads are initialised ~1e-4, below XNNPACK's weight scale floor."""
    torch.manual_seed(0)
    art = edgeclip.export(FineTuned("eva02_tiny_patch14_224", depth=1).eval(), quant="int8", data=tiny_images, labels=["cat", "dog", "car"],
                          formats=("pte",), verify_size=6, out=str(tmp_path), min_agreement=0.0)[0]
    assert "qkv_bias_separate" in art.manifest["source"]["export_patches"][0]
    assert art.manifest["fidelity"]["mean_cosine"] >= 0.98
