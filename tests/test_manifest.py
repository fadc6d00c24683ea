"""The manifest schema (edgeclip/manifest.py): typed, versioned, below exporter and runtimes."""

import json

import pytest

from edgeclip.errors import EdgeclipError
from edgeclip.manifest import SCHEMA_VERSION, Manifest, open_artifact


def _manifest(**over):
    d = {"schema_version": SCHEMA_VERSION, "name": "m", "format": "onnx", "task": "classifier", "target": "cpu",
         "file": {"name": "model.onnx", "bytes": 3, "sha256": "ab"},
         "inputs": [{"name": "pixel_values", "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
         "outputs": [{"name": "logits", "shape": ["batch", 3], "dtype": "float32"}], "opset": 18,
         "preprocessing": {"size": 32}, "labels": ["a", "b", "c"], "tokenizer": None,
         "quantization": {"dtype": "int8", "scheme": "dynamic"}, "source": {"model": "x"}, "random_weights": False,
         "compression": None, "recipe": {"quant": "int8"}, "fidelity": {"mean_cosine": 0.99},
         "fidelity_threshold": {"min_cosine": 0.98}, "versions": {}, "export_seconds": 1.0, "created": "now"}
    d.update(over)
    return d


def test_round_trip_is_the_same_json_in_the_same_order():
    d = _manifest()
    m = Manifest.from_dict(d)
    assert m.inputs[0].shape == ["batch", 3, 32, 32] and m.file.bytes == 3 and m.quantization["scheme"] == "dynamic"
    assert list(m.to_dict().items()) == list(d.items())


def test_unknown_keys_of_the_same_schema_survive():
    m = Manifest.from_dict(_manifest(new_section={"x": 1}))
    assert m.extra == {"new_section": {"x": 1}} and m.to_dict()["new_section"] == {"x": 1}


@pytest.mark.parametrize("bad, needle", [
    (dict(schema_version=SCHEMA_VERSION + 1), "newer than this edgeclip reads"),
    (dict(format="tflite"), "format 'tflite', which this edgeclip cannot run"),
    (dict(inputs=[{"name": "x"}]), "bad file / inputs / outputs entry"),
])
def test_bad_manifests_are_refused_in_one_line(bad, needle, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(**bad)))
    (tmp_path / "model.onnx").write_bytes(b"abc")
    with pytest.raises(EdgeclipError, match=needle):
        open_artifact(tmp_path)


def test_missing_section_is_named(tmp_path):
    d = _manifest()
    del d["fidelity"]
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(EdgeclipError, match=r"missing fidelity"):
        open_artifact(tmp_path)
