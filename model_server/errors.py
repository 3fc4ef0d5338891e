"""User-facing errors: the CLI prints their message on one line and exits non-zero, without a traceback."""


class IvadasError(Exception):
    """Base class for errors caused by input (data, images, artifacts), not by a bug."""


class ImageError(IvadasError):
    """An image could not be read or decoded; the message names the file."""


class DataError(IvadasError):
    """A data set folder is missing, empty or not in the expected layout."""


class ArtifactError(IvadasError):
    """A model artifact is corrupt, incomplete or from an incompatible version."""


class UnknownClassError(IvadasError):
    """A product class is not in the artifact or data set."""
