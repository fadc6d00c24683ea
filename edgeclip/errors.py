"""One exception type for user mistakes.

The CLI turns an ``EdgeclipError`` into a single line and a non-zero exit code;
anything else is a bug and keeps its traceback (``--debug`` shows it for ours too).
"""


class EdgeclipError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class FidelityError(EdgeclipError):
    """An artifact did not match the eager model closely enough to be written."""

    exit_code = 3


# Optional packages and the extra that installs each (pyproject.toml [project.optional-dependencies]).
EXTRAS = {
    "transformers": "siglip",     # Hugging Face tokenizers of SigLIP / SigLIP2 and other hf-hub text towers
    "sentencepiece": "siglip",
    "google.protobuf": "siglip",
    "yaml": "yaml",               # YAML recipes
}


class MissingDependency(EdgeclipError):
    """An optional package a feature needs is not installed; the message names the extra that installs it."""


def missing_dependency(module: str, needed_for: str | None = None) -> MissingDependency:
    """The one line for a missing import: which package, what needs it, and the pip command that fixes it."""
    top = module.split(".")[0]
    extra = EXTRAS.get(module) or EXTRAS.get(top)
    fix = f'pip install "edgeclip[{extra}]"' if extra else f"pip install {top}"
    what = f"{needed_for} needs" if needed_for else "this command needs"
    return MissingDependency(f"{what} the Python package '{top}', which is not installed; {fix}")


def first_line(e: BaseException, limit: int = 300) -> str:
    """The line of a library exception a user can act on (its first, cut to ``limit``), or its type's name
    when it has no message: what goes between the parentheses of a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def refuse_unknown_keys(d: dict, known: set[str], what: str) -> None:
    """A recipe table with a key no field takes: refused by name with the valid keys, before the dataclass's own
    ``TypeError`` (which names one key and no fix) reaches the user."""
    unknown = sorted(set(d) - known)
    if unknown:
        raise EdgeclipError(f"unknown {what} keys {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
