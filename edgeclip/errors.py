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
