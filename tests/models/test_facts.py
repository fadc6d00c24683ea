"""One facts record travels from the loader to the manifest: what a model is and where it came from is built
once (``LoadedModel.facts``) and shared by the prepared model and the export subject, not copied between them."""

import dataclasses

import pytest

from edgeclip.exporter.export import write_artifact
from edgeclip.exporter.recipe import ExportRecipe
from edgeclip.models.datasets import load_dataset
from edgeclip.models.facts import ModelFacts
from edgeclip.preparation import export_subject, prepare


@pytest.mark.parametrize("task", ["classifier", "text-encoder"])
def test_every_manifest_fact_comes_from_the_one_record(task, tiny_clip_dir, tiny_images, tmp_path):
    data = load_dataset(tiny_images, "test")
    prep = prepare(str(tiny_clip_dir), task=task, data=data)
    subject = export_subject(prep, data, 4, None, False)
    # the subject holds the prepared model's facts (plus the export patches the file ships), not a copy of some
    assert dataclasses.replace(subject.facts, source=prep.facts.source) == prep.facts
    assert {k: v for k, v in subject.source.items() if k != "export_patches"} == prep.source
    m = write_artifact(subject, ExportRecipe(formats=("onnx",), task=task).validated(), "onnx", tmp_path).manifest
    f = subject.facts
    assert (m["task"], m["labels"], m["source"], m["random_weights"], m["tokenizer"]) == \
        (f.task, f.classes, f.source, f.random_weights, f.tokenizer_info)
    if task == "classifier":
        assert m["labels"] == data.classes == ["car", "cat", "dog"] and m["preprocessing"] == f.preprocess.to_dict()
        assert m["preprocessing"]["size"] == 32
    else:   # an encoder has no labels and takes token ids, not images
        assert m["labels"] == [] and m["preprocessing"] is None and m["tokenizer"]["context_length"] == 16


def test_the_record_is_read_only_and_noting_adds_to_source():
    facts = ModelFacts("classifier", ["a"], {"model": "m"}, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.task = "text-encoder"
    noted = facts.noting(export_patches=["x"])
    assert noted.source == {"model": "m", "export_patches": ["x"]} and facts.source == {"model": "m"}
