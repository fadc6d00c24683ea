"""What a task module is and where it came from: the one record every stage hands on.

A model passes through three records on its way to a file: the loader's ``LoadedModel`` (the raw model with
its tokenizer), the prepared task module (``edgeclip.preparation.Prepared``: compressed and wrapped as a
classifier or encoder) and the export subject (``edgeclip.exporter.export.ExportSubject``: that module with the
real inputs it is verified on).  The facts that end up in every manifest -- task, labels, source, whether the
weights are random, preprocessing, tokenizer -- are the same in all of them.  They used to be copied field by
field from one record to the next, so a fact added to one could silently miss the manifest; now the later
records hold this one object and the loader builds it (``LoadedModel.facts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .preprocess import Preprocess


@dataclass(frozen=True)
class ModelFacts:
    """The manifest-bound facts of one task module (classifier, image-encoder or text-encoder)."""

    task: str
    classes: list[str] = field(default_factory=list)   # empty for the encoders
    source: dict = field(default_factory=dict)         # {"model", "pretrained", "kwargs"}: rebuilds the model
    random_weights: bool = False
    preprocess: Preprocess | None = None                # None for the text encoder (it takes token ids)
    tokenizer_info: dict | None = None                  # the text encoder's tokenizer facts

    @property
    def classification(self) -> bool:
        return self.task == "classifier"

    def noting(self, **source_facts) -> "ModelFacts":
        """The same facts with more recorded under ``source`` (e.g. the export patches the file ships)."""
        return replace(self, source={**self.source, **source_facts})


class FactsView:
    """Read access to a record's ``facts`` under the old attribute names (``prep.task``, ``subject.source``),
    so callers read one fact the same way from every record."""

    facts: ModelFacts

    task = property(lambda self: self.facts.task)
    classes = property(lambda self: self.facts.classes)
    source = property(lambda self: self.facts.source)
    random_weights = property(lambda self: self.facts.random_weights)
    preprocess = property(lambda self: self.facts.preprocess)
    tokenizer_info = property(lambda self: self.facts.tokenizer_info)
    classification = property(lambda self: self.facts.classification)
