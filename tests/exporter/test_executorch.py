"""ExecuTorch (.pte) round trips on a tiny random CLIP: write, reload through the runtime, compare with eager.

Random weights: these tests prove plumbing and numerical agreement with eager only.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")

from edgeclip.errors import EdgeclipError  # noqa: E402
from edgeclip.exporter.formats.executorch import export_pte  # noqa: E402
from edgeclip.manifest import Artifact, sha256_file  # noqa: E402
from edgeclip.models.datasets import load_dataset  # noqa: E402
from edgeclip.pipeline import prepare  # noqa: E402
from edgeclip.runtimes.executorch_runtime import ExecuTorchSession, load_pte  # noqa: E402
from conftest import row_cosine  # noqa: E402


@pytest.fixture(scope="module")
def artifacts(tiny_classifier, tmp_path_factory):
    """One .pte per (quant, scheme, delegate), written once for the whole module."""
    module, images, _ = tiny_classifier
    out = tmp_path_factory.mktemp("pte")
    made = {}
    for key, kw in {"fp32": dict(), "int8-dynamic": dict(quant="int8", scheme="dynamic"),
                    "int8-static": dict(quant="int8", scheme="static", calib=images[:9]),
                    "portable": dict(delegate="portable")}.items():
        path = out / f"{key}.pte"
        facts = export_pte(module, torch.from_numpy(images[:2]), path, **kw)
        made[key] = (path, facts)
    return made


@pytest.mark.parametrize("key", ["fp32", "int8-dynamic", "int8-static"])
def test_xnnpack_round_trip(tiny_classifier, artifacts, key):
    _, images, ref = tiny_classifier
    path, facts = artifacts[key]
    sess = load_pte(str(path), threads=1)
    assert sess.name == "executorch-xnnpack" and sess.delegate == "xnnpack"
    got = sess.run(images)
    assert got.shape == ref.shape and got.dtype == np.float32
    if key == "fp32":
        assert np.abs(got - ref).max() < 1e-3
    else:
        assert row_cosine(got, ref).mean() > 0.98
    # delegation facts: XNNPACK takes most of the graph; LayerNorm stays on the portable kernels
    assert facts["delegate"] == "xnnpack" and facts["delegated_subgraphs"] >= 1
    assert facts["delegated_ops"] > facts["non_delegated_ops"] > 0
    assert 0.5 < facts["delegated_fraction"] < 1
    assert "native_layer_norm_default" in facts["non_delegated_by_op"]
    assert facts["attention"].startswith("2 nn.MultiheadAttention split")
    assert facts["lowering_seconds"] > 0 and facts["export_seconds"] > 0
    # any batch size: rows do not depend on what else is in the batch
    for b in (1, 5):
        out = sess.run(images[:b])
        assert out.shape == (b, ref.shape[1])
        np.testing.assert_allclose(out, got[:b], atol=1e-4 if key == "fp32" else 0.05)


def test_quantization_facts(artifacts):
    dyn, static = artifacts["int8-dynamic"][1], artifacts["int8-static"][1]
    for f, scheme in ((dyn, "dynamic"), (static, "static")):
        assert f["method"] == "pt2e XNNPACKQuantizer" and f["scheme"] == scheme and f["per_channel"] is True
        assert f["int8_weight_ops"]["linear"] >= 8 and f["int8_weight_ops"]["conv2d"] == 1
        assert "layer_norm" in f["float_ops"]
    assert dyn["calibration_images"] == 0 and static["calibration_images"] == 9
    assert static["int8_activation_ops"].get("add", 0) >= 4 and not dyn["int8_activation_ops"]
    fp32_size = artifacts["fp32"][0].stat().st_size
    for key in ("int8-dynamic", "int8-static"):
        # width-64 toy: position table, LayerNorms and the float projection are a large share here
        assert artifacts[key][0].stat().st_size < 0.6 * fp32_size


def test_portable_program(tiny_classifier, artifacts):
    _, images, ref = tiny_classifier
    path, facts = artifacts["portable"]
    assert facts["delegate"] == "portable" and facts["delegated_ops"] == 0 and facts["delegated_subgraphs"] == 0
    assert facts["delegated_fraction"] == 0 and facts["non_delegated_ops"] > 0
    sess = load_pte(str(path))
    assert sess.name == "executorch-portable" and sess.threads == 1   # portable kernels are single-threaded
    assert np.abs(sess.run(images[:5]) - ref[:5]).max() < 1e-3


def test_artifact_integrity_and_threads(artifacts, tmp_path):
    src, facts = artifacts["fp32"]
    f = tmp_path / "model.pte"
    f.write_bytes(src.read_bytes())
    manifest = {"format": "pte", "file": {"name": "model.pte", "bytes": f.stat().st_size, "sha256": sha256_file(f)},
                "quantization": {"dtype": "fp32", **facts}}
    sess = load_pte(Artifact(tmp_path, manifest), threads=2)
    assert sess.name == "executorch-xnnpack" and sess.max_batch == facts["max_batch"]
    assert sess.threads == 2                 # the XNNPACK threadpool really has 2 threads
    # the pool is process-wide and cannot be resized under a loaded method: threads says so
    other = load_pte(Artifact(tmp_path, manifest), threads=1)
    assert other.threads == 2 and other.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)
    del sess, other
    assert load_pte(Artifact(tmp_path, manifest), threads=1).threads == 1
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(EdgeclipError, match="sha256"):
        load_pte(Artifact(tmp_path, manifest))


def test_static_batch_program_takes_any_batch(tiny_classifier, tmp_path):
    module, images, ref = tiny_classifier
    path = tmp_path / "b1.pte"   # portable: the fastest to lower; the row loop is the runtime's, whatever the delegate
    facts = export_pte(module, torch.from_numpy(images[:1]), path, delegate="portable", dynamic_batch=False)
    assert facts["batch"] == 1 and facts["max_batch"] == 1
    sess = ExecuTorchSession(path)
    assert sess.static_batch and sess.max_batch == 1
    assert np.abs(sess.run(images[:5]) - ref[:5]).max() < 1e-3


def test_refusals(tiny_classifier, tmp_path):
    module, images, _ = tiny_classifier
    x = torch.from_numpy(images[:2])
    with pytest.raises(EdgeclipError, match="calibration"):
        export_pte(module, x, tmp_path / "a.pte", quant="int8", scheme="static", calib=None)
    with pytest.raises(EdgeclipError, match="XNNPACK"):
        export_pte(module, x, tmp_path / "b.pte", quant="int8", delegate="portable")
    with pytest.raises(EdgeclipError, match="delegate"):
        export_pte(module, x, tmp_path / "c.pte", delegate="vulkan")


def test_text_encoder_eot_pooling(tiny_clip_dir, tiny_images, tmp_path):
    prep = prepare(str(tiny_clip_dir), task="text-encoder", data=load_dataset(tiny_images))
    captions = ["a cat.", "a photo of a dog.", "a blurry photo of a very large and unusual car, seen from far away."]
    tokens = prep.tokenizer(captions).numpy().astype(np.int64)
    eot = tokens.argmax(-1)
    assert len(set(eot.tolist())) == 3          # the EOT position really differs per caption
    path = tmp_path / "text.pte"
    facts = export_pte(prep.module, torch.from_numpy(tokens[:2]), path)
    assert facts["delegated_ops"] > 0
    with torch.inference_mode():
        ref = prep.module(torch.from_numpy(tokens)).numpy()
    sess = load_pte(str(path))
    got = sess.run(tokens)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3
    for i in range(3):                           # batch 1, each caption alone
        assert np.abs(sess.run(tokens[i:i + 1]) - ref[i:i + 1]).max() < 1e-3


def test_program_that_cannot_be_built_is_one_line_and_no_file(tiny_classifier, tmp_path, monkeypatch):
    """to_executorch failing (as EVA-02's int8 program did: quantize ops left outside XNNPACK) is one line
    naming the cause and the formats that work, and no .pte is left behind."""
    from executorch.exir import EdgeProgramManager

    def refuse(self, *a, **k):
        raise RuntimeError("Missing out variants: {'quantized_decomposed::quantize_per_tensor'}\nmore detail")

    monkeypatch.setattr(EdgeProgramManager, "to_executorch", refuse)
    module, images, _ = tiny_classifier
    path = tmp_path / "x.pte"
    with pytest.raises(EdgeclipError) as e:
        export_pte(module, torch.from_numpy(images[:1]), path, delegate="portable", dynamic_batch=False)
    assert str(e.value).startswith("ExecuTorch could not build a program for ") and "\n" not in str(e.value)
    assert "Missing out variants" in str(e.value) and "--format onnx or ptl" in str(e.value) and not path.exists()


def test_running_a_pte_does_not_import_the_compiler(tiny_classifier, artifacts, tmp_path):
    """A process that only runs a .pte (an app, a bench worker whose RSS is reported as the runtime's) loads
    ExecuTorch's runtime without executorch.exir (5.5 s and the compiler's memory); the compiler still
    imports in full afterwards in the same process."""
    import subprocess
    import sys

    _, images, ref = tiny_classifier
    path, _ = artifacts["fp32"]
    code = (
        "import sys, numpy as np\n"
        "from edgeclip.runtimes.executorch_runtime import load_pte\n"
        f"out = load_pte({str(path)!r}).run(np.load(sys.argv[1]))\n"
        "assert not any(m.startswith('executorch.exir') for m in sys.modules), sorted(m for m in sys.modules if 'exir' in m)\n"
        "np.save(sys.argv[1], out)\n"
        "import executorch.exir, executorch.exir._warnings\n"
        "assert callable(executorch.exir.to_edge) and executorch.exir._warnings.ExperimentalWarning\n"
    )
    npy = tmp_path / "inputs.npy"
    np.save(npy, images[:3])
    r = subprocess.run([sys.executable, "-c", code, str(npy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.abs(np.load(npy) - ref[:3]).max() < 1e-3


def test_int4_8da4w_program_quantizes_linears_and_honours_float_layers(tiny_classifier, artifacts, tmp_path):
    """torchao 8da4w lowered to XNNPACK: every Linear whose width divides by the group gets int4 weights, a named
    float layer stays float, and the program is smaller than the int8 one and still the model (cosine)."""
    module, images, ref = tiny_classifier
    from edgeclip.exporter.quantize.attention import split_attention

    split = split_attention(module)
    linears = [n for n, m in split.named_modules() if isinstance(m, torch.nn.Linear)]
    keep = next(n for n in linears if n.endswith("mlp.c_fc"))
    path = tmp_path / "int4.pte"
    facts = export_pte(module, torch.from_numpy(images[:2]), path, quant="int4", group_size=32, float_layers=(keep,))
    assert facts["dtype"] == "int4" and facts["group_size"] == 32
    even = [n for n in linears if split.get_submodule(n).in_features % 32 == 0]
    assert facts["int4_linears"] == len(even) - 1 and facts["float_linears"]["float_layers"] == [keep]
    assert path.stat().st_size < 0.6 * artifacts["fp32"][0].stat().st_size   # width-64 toy: the float share is large
    got = load_pte(str(path), threads=1).run(images)
    assert row_cosine(got, ref).mean() > 0.97


class _LinearThenRuntimeWeight(torch.nn.Module):
    """One Linear XNNPACK takes whole (a parameter weight) and, optionally, one it refuses to keep whole (a weight
    computed at run time)."""

    def __init__(self, runtime_weight: bool):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 8)
        self.w = torch.nn.Parameter(torch.randn(8, 8))
        self.runtime_weight = runtime_weight

    def forward(self, x):
        y = self.fc(x)
        return torch.nn.functional.linear(y, self.w * 2) if self.runtime_weight else y


@pytest.mark.parametrize("runtime_weight", [False, True])
def test_partitioner_keeps_an_op_whole_only_when_xnnpack_takes_every_node_of_it(runtime_weight, tmp_path):
    """xnnpack_partitioner decides per op type up front (so ExecuTorch decomposes once): linear is kept whole when
    XNNPACK's own per-node check passes on every linear, decomposed when any fails -- and the program is still the
    model either way."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from edgeclip.exporter.formats.executorch import xnnpack_partitioner

    module = _LinearThenRuntimeWeight(runtime_weight).eval()
    x = torch.randn(4, 8)
    ep = torch.export.export(module, (x,)).run_decompositions({})
    _, stock_check = XnnpackPartitioner().ops_to_not_decompose(ep)
    linears = [n for n in ep.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert [stock_check(n) for n in linears] == ([True, False] if runtime_weight else [True])
    ops, check = xnnpack_partitioner().ops_to_not_decompose(ep)
    assert check is None
    assert ops == ([] if runtime_weight else [torch.ops.aten.linear.default])
    path = tmp_path / "m.pte"
    export_pte(module, x, path)
    with torch.no_grad():
        ref = module(x).numpy()
    np.testing.assert_allclose(load_pte(str(path), threads=1).run(x.numpy()), ref, atol=1e-5)


class _ConvNormActCat(torch.nn.Module):
    """Ops for each XNNPACK pass that the skip must still run: batch norm to fuse, relu / hardtanh to fuse, a cat."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(16, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(torch.cat([y, torch.nn.functional.hardtanh(y)], 1).mean((2, 3)))


def test_idle_xnnpack_passes_are_skipped_and_the_program_is_the_same(tmp_path, monkeypatch):
    """A pass runs on a partition only if the partition, as the passes before it left it, has the ops it rewrites:
    here batch-norm fusion, activation fusion and cat splitting run, the PReLU / upsample / SDPA passes do not, nor
    batch-norm decomposition once the fusion removed the batch norm -- and the .pte is byte for byte the stock
    lowering's."""
    import contextlib

    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    from edgeclip.exporter.formats import executorch as ex

    ran: list[str] = []
    transform = XNNPACKPassManager.transform

    def record(self):
        ran.extend(p.__name__ for p in self.passes)
        return transform(self)

    monkeypatch.setattr(XNNPACKPassManager, "transform", record)
    torch.manual_seed(0)
    module, x = _ConvNormActCat().eval(), torch.randn(2, 3, 8, 8)
    export_pte(module, x, tmp_path / "skip.pte", dynamic_batch=False)
    assert {"FuseBatchNormPass", "FuseActivationPass", "DecomposeConcatenate", "Conv1dUnsqueezePass"} <= set(ran), ran
    # DecomposeBatchNorm is checked after the fusion took the batch norm into the conv: nothing left for it
    assert not {"PReLUReshapePass", "ConvertToUpsampleBilinear2d", "ConvertToSDPAPass", "RemoveGetItemPass",
                "DecomposeBatchNorm"} & set(ran), ran
    monkeypatch.setattr(ex, "idle_xnnpack_passes_skipped", contextlib.nullcontext)
    export_pte(module, x, tmp_path / "stock.pte", dynamic_batch=False)
    assert (tmp_path / "skip.pte").read_bytes() == (tmp_path / "stock.pte").read_bytes()
    with torch.no_grad():
        np.testing.assert_allclose(load_pte(str(tmp_path / "skip.pte"), threads=1).run(x.numpy()), module(x).numpy(), atol=1e-4)


def test_pattern_passes_need_every_op_the_skip_assumes():
    """The SDPA and bilinear passes match whole pattern graphs: each op the skip waits for is in every pattern (an
    ExecuTorch whose patterns changed fails here rather than losing a rewrite)."""
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa

    from edgeclip.exporter.formats.executorch import XNNPACK_PASS_NEEDS, graph_ops

    for name, graphs in (("ConvertToSDPAPass", sdpa.get_graphs()),
                         ("ConvertToUpsampleBilinear2d", list(bilinear_2d.get_graphs_dict()))):
        (need,) = XNNPACK_PASS_NEEDS[name]
        for g in graphs:
            assert need <= graph_ops(g.graph), (name, need - graph_ops(g.graph))
