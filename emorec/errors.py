"""Errors that reach the user as one clear sentence instead of a traceback."""


class EmorecError(Exception):
    """Base for every error caused by the user's input (config, data, paths)."""


class ConfigError(EmorecError):
    """A run config or an override is wrong: unknown key, wrong type, bad value."""


class DataError(EmorecError):
    """A dataset file is missing or a row in it is malformed."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        where = ""
        if file is not None:
            where = f"{file}" + (f" line {line}" if line is not None else "") + ": "
        super().__init__(where + message)
        self.file = file
        self.line = line


class StorageError(EmorecError):
    """The storage endpoint kept failing: the operation gave up after its retries."""


class CheckpointError(EmorecError):
    """A checkpoint is missing, incomplete, or does not match its manifest."""
