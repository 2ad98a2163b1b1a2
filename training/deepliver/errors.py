"""Exceptions raised by deepliver.

Library code raises these with a message that names the file and the problem; the command line prints
the message on one line and exits with ``exit_code`` (2 for bad input, 1 for internal failures).
"""

from __future__ import annotations

import os
from typing import Iterable


class DeepLiverError(Exception):
    """Base class. ``exit_code`` 1: something went wrong inside deepliver or its libraries."""

    exit_code = 1

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(DeepLiverError):
    """Bad input from the user (a file, a folder, an option). ``exit_code`` 2."""

    exit_code = 2


class ReadError(InputError):
    """A file or folder could not be read as a volume."""


class GeometryError(InputError):
    """Two volumes that must share a geometry do not, or a geometry is unusable (tilt, 4D...)."""


class LabelError(InputError):
    """A label map holds values outside the label table, or is otherwise invalid."""


class ConfigError(InputError):
    """An option or configuration value is invalid."""


class ProblemsError(InputError):
    """Several problems found at once (dataset checks); ``problems`` lists each one-line message."""

    def __init__(self, message: str, problems: Iterable[str], path: str | os.PathLike | None = None):
        self.problems = list(problems)
        super().__init__(f"{message} ({len(self.problems)} problem(s))", path)
