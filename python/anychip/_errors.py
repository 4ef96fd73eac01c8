"""The exceptions anychip raises. Each carries the one-line message the ``anychip`` command
prints after ``error:``; each also derives from the built-in class a Python user would catch."""


class AnychipError(Exception):
    """Any failure in anychip: the message says what went wrong and how to fix it."""


class InputError(AnychipError, ValueError):
    """A bad argument: unknown preset or chip, wrong dtype or shape of tokens, bad setting."""


class DataError(AnychipError, FileNotFoundError):
    """A file or directory that is missing or unreadable (data, run, model, chip file)."""


class UnsupportedError(AnychipError, NotImplementedError):
    """A feature this port, model or build does not have."""


__all__ = ["AnychipError", "InputError", "DataError", "UnsupportedError"]
