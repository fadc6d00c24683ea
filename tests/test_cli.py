"""The command line: help everywhere, one-line errors with exit codes, JSON output."""

import json

import pytest
from click.testing import CliRunner

from edgeclip.cli import main


@pytest.fixture()
def run():
    runner = CliRunner()

    def _run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return _run


@pytest.mark.parametrize("cmd", [[], ["export"], ["eval"], ["bench"]])
def test_help(run, cmd):
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output


@pytest.mark.parametrize("args, needle", [
    (["export", "--format", "onnx", "--quant", "int8", "--backend", "qnnpack"], "the qnnpack backend builds TorchScript-lite"),
    (["export", "--quant", "fp16", "--target", "cpu"], "--quant fp16 builds CUDA artifacts"),
    (["export", "--model", "ViT-B-33"], "did you mean ViT-B-32"),
    (["export", "--model", "/no/such/dir"], "does not exist"),
    (["export", "--model", "ViT-B-32", "--pretrained", "openai-v9"], "unknown pretrained tag 'openai-v9'"),
    (["eval", "--data", "mnist2"], "unknown dataset 'mnist2'"),
    (["bench", "--out", "/nonexistent-dir"], "no artifacts under /nonexistent-dir"),
])
def test_user_errors_are_one_line(run, args, needle, tmp_path, tiny_images):
    # export gets a tiny real dataset, so the error under test is reached with or without ../shared
    r = run(*args, "--data", tiny_images, "--out", tmp_path / "o") if args[0] == "export" else run(*args)
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]
    assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_debug_shows_traceback():
    r = CliRunner().invoke(main, ["--debug", "eval", "--data", "mnist2"])
    assert r.exit_code != 0 and r.exception is not None


def test_export_eval_bench_json(run, tiny_clip_dir, tiny_images, tmp_path):
    out = tmp_path / "o"
    r = run("export", "--model", tiny_clip_dir, "--data", tiny_images, "--quant", "int8", "--out", out, "--verify-size", 6, "--json")
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.stdout)
    art = out / m["name"]
    r = run("eval", art, "--data", tiny_images, "--json")
    res = json.loads(r.stdout)
    assert r.exit_code == 0 and res["images"] == 18 and res["runtime"] == "onnxruntime-cpu"
    r = run("bench", "--out", out, "--data", tiny_images, "--threads", 1, "--rounds", 1, "--reps", 2, "--batch", 4, "--json")
    rep = json.loads(r.stdout)
    assert r.exit_code == 0 and len(rep["rows"]) == 2 and (out / "bench" / "bench.md").is_file()
    r = run("bench", "--out", out, "--data", tiny_images, "--threads", 1, "--rounds", 1, "--reps", 2, "--batch", 4)
    assert r.exit_code == 0 and "| artifact |" in r.output and "speed-up vs eager" in r.output


def test_random_weights_are_labelled_everywhere(run, tmp_path, tiny_images):
    """--pretrained none: seeded init (the bench baseline is the exported model) and every output says so."""
    import open_clip

    from conftest import TINY_CFG

    cfg = tmp_path / "edgeclip_cli_tiny.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg)
    out = tmp_path / "o"
    r = run("export", "--model", "edgeclip_cli_tiny", "--pretrained", "none", "--data", tiny_images, "--out", out, "--verify-size", 6)
    assert r.exit_code == 0, r.output
    assert "Note: random weights" in r.output
    r = run("eval", "edgeclip_cli_tiny", "--pretrained", "none", "--data", tiny_images)
    assert r.exit_code == 0 and "Note: random weights" in r.output
    r = run("bench", "--out", out, "--data", tiny_images, "--threads", 1, "--rounds", 1, "--reps", 2, "--batch", 4, "--json")
    rep = json.loads(r.stdout)
    assert rep["random_weights"] is True and "random weights" in rep["note"]
    art = next(row for row in rep["rows"] if not row.get("baseline"))
    assert art["agreement"] == 100.0  # the rebuilt eager baseline is the same random model


def test_formats_table_has_no_trailing_spaces(run):
    r = run("formats")
    assert r.exit_code == 0 and "onnx" in r.output
    assert [line for line in r.output.splitlines() if line != line.rstrip()] == []


def test_missing_optional_dependency_is_one_line(run, tiny_clip_dir, tiny_images, tmp_path, monkeypatch):
    """A model whose tokenizer comes from Hugging Face needs `transformers`: one line naming the extra, exit 2."""
    import shutil
    import sys

    d = tmp_path / "hf_tok_model"
    shutil.copytree(tiny_clip_dir, d)
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP2"
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    monkeypatch.setitem(sys.modules, "transformers", None)      # as on a machine without the package
    r = run("export", "--model", d, "--data", tiny_images, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert lines == ["Error: the tokenizer of local-dir:" + str(d) + " needs the Python package 'transformers', which is not "
                     "installed; pip install \"edgeclip[siglip]\""]
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_image_encoder_goes_on_without_a_tokenizer_it_does_not_need(run, tiny_clip_dir, tiny_images, tmp_path, monkeypatch):
    """SigLIP offline or without the extra: the image encoder exports and its manifest says why there is no
    tokenizer; the classifier (zero-shot head) still refuses in one line."""
    import shutil
    import sys

    d = tmp_path / "hf_tok_model"
    shutil.copytree(tiny_clip_dir, d)
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP2"
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    monkeypatch.setitem(sys.modules, "transformers", None)
    r = run("export", "--model", d, "--task", "image-encoder", "--data", tiny_images, "--verify-size", "6",
            "--out", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
    (m,) = [json.loads(p.read_text()) for p in (tmp_path / "o").glob("*/manifest.json")]
    assert "needs the Python package 'transformers'" in m["source"]["tokenizer_not_loaded"] and m["tokenizer"] is None
    r = run("export", "--model", d, "--data", tiny_images, "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "transformers" in r.output and not (tmp_path / "o2").exists()


def test_any_missing_module_becomes_one_line(run, monkeypatch):
    import edgeclip.exporter.recipe as recipe

    def boom(*a, **k):
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")
    monkeypatch.setattr(recipe.ExportRecipe, "validated", boom)
    r = run("export")
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        "Error: this command needs the Python package 'yaml', which is not installed; pip install \"edgeclip[yaml]\"")


def test_bench_and_verify_accept_the_out_folder(run, tiny_clip_dir, tiny_images, tmp_path):
    """`edgeclip bench OUT` / `edgeclip verify OUT` take the folder export wrote into, like edgeclip.bench("out")."""
    out = tmp_path / "o"
    assert run("export", "--model", tiny_clip_dir, "--data", tiny_images, "--out", out, "--verify-size", 6).exit_code == 0
    r = run("verify", out, "--data", tiny_images, "--json")
    assert r.exit_code == 0, r.output
    assert [x["passed"] for x in json.loads(r.stdout)] == [True]
    r = run("bench", out, "--data", tiny_images, "--threads", 1, "--rounds", 1, "--reps", 2, "--batch", 4, "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["rows"]) == 2
    r = run("bench", tmp_path / "empty-does-not-exist")
    assert r.exit_code == 2 and "does not exist" in r.output and "no artifacts under" in r.output


def test_evaluate_rounds_what_people_read(tiny_clip_dir, tiny_images, monkeypatch):
    import edgeclip
    import edgeclip.benchmarks.accuracy as acc

    full = acc.accuracy_metrics
    monkeypatch.setattr(acc, "accuracy_metrics", lambda *a: {**full(*a), "top1": 8899 / 100 + 1e-14})  # 88.99000000000001
    res = edgeclip.evaluate(str(tiny_clip_dir), tiny_images)
    assert repr(res["top1"]) == "88.99" and res["images"] == 18


def test_a_missing_edgeclip_module_is_a_bug_not_an_extra(run, monkeypatch):
    import edgeclip.exporter.recipe as recipe

    def boom(*a, **k):
        raise ModuleNotFoundError("No module named 'edgeclip.exporter.nope'", name="edgeclip.exporter.nope")
    monkeypatch.setattr(recipe.ExportRecipe, "validated", boom)
    with pytest.raises(ModuleNotFoundError):
        run("export")
