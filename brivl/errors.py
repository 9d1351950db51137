"""The errors a user can fix: a bad config, input file, seed URL or checkpoint.

Each message names the thing (section and field, file and column, URL) and what is
accepted; the ``brivl`` command line prints an :class:`InputError` as one line and exits 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input a user can fix; the message names it and what is accepted."""


class ConfigError(InputError):
    """A config value that is not accepted; the message names ``section.field``."""


class SchemaError(InputError):
    """An input Parquet file whose columns are missing or of the wrong type; names both."""


class CheckpointError(InputError):
    """A model checkpoint that cannot be loaded (missing, truncated or malformed file)."""


class ManifestError(RuntimeError):
    """A stage directory is missing its manifest, or its files disagree with it."""


#: What the command line prints as one line (exit code 2) and a stage never retries.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError, ManifestError, FileNotFoundError, FileExistsError)
