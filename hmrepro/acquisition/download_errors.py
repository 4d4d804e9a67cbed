"""Errors of the acquisition step (all :class:`hmrepro.errors.HmreproError`, printed without traceback)."""

from ..errors import CorruptFileError, HmreproError


class DownloadError(HmreproError):
    """No candidate (URL, mirror, Drive id) of a source could be fetched."""


class ChecksumError(CorruptFileError):
    """A file's size, md5 or sha256 differs from what is published or pinned."""


class UnsafeArchiveError(HmreproError):
    """An archive entry would be written outside the extraction folder (absolute path, '..', link)."""


class InsufficientSpaceError(HmreproError):
    """The disk has not enough free space for a download or an extraction."""


class PermanentHTTPError(DownloadError):
    """The server answered with a status that retrying cannot fix (e.g. 404)."""
