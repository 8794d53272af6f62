"""User-facing errors.

A `ChatforgeError` is a mistake the user can fix (bad config, missing file, malformed record).
The CLI prints its message on one line, without a traceback; anything else is a bug and keeps
its traceback.
"""


class ChatforgeError(Exception):
    """An error caused by user input, reported as one clear line."""


class ConfigError(ChatforgeError):
    """A config file or override that does not match the typed config."""


class DataError(ChatforgeError):
    """Input data that cannot be read (missing file, empty corpus, unreadable record)."""


class CheckpointError(ChatforgeError):
    """A checkpoint that cannot be loaded into the current run."""
