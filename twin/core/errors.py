"""The one exception type for mistakes a user can fix (bad config, bad input file)."""


class TwinError(Exception):
    """A user-facing error: the CLI prints its message on one line, with no traceback.

    Raise it for problems in the user's input or setup, with a message that says which file or
    key is wrong and what to do. Bugs in twin itself stay ordinary exceptions with tracebacks.
    """
