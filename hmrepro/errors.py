"""Errors a user can act on.

Every error raised for bad input or missing files is an :class:`HmreproError` whose message names
the offending path or value and, where there is one, the command that fixes it. The CLI prints the
message (no traceback) and exits with a non-zero status.
"""


class HmreproError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class MissingDataError(HmreproError, FileNotFoundError):
    """A dataset file or folder that should exist does not."""


class CorruptFileError(HmreproError):
    """A file exists but cannot be read or fails its checksum."""


class InvalidInputError(HmreproError, ValueError):
    """A choice hmrepro cannot honour (a protocol, a fold) or split lists that cannot make an episode.

    Also a ``ValueError``, so library callers that catch the built-in keep working.
    """
