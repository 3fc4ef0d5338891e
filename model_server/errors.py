"""User-facing errors: the CLI prints their message on one line and exits non-zero, without a traceback."""


class IvadasError(Exception):
    """Base class for errors caused by input (data, images, artifacts), not by a bug."""


class ImageError(IvadasError):
    """An image could not be read or decoded; the message names the file."""

    #: the error type (ivadas_contract.errors.TYPES) a server answers with
    kind = "invalid_image"


class ImageTooLargeError(ImageError):
    """An image's declared dimensions are over the pixel limit (a decompression bomb, or just too big)."""

    kind = "payload_too_large"


class ImageTooSmallError(ImageError):
    """An image decodes, but a side is under the minimum: too few pixels for a patch of the model to see."""

    kind = "unprocessable"


class DataError(IvadasError):
    """A data set folder is missing, empty or not in the expected layout."""


class ArtifactError(IvadasError):
    """A model artifact is corrupt, incomplete or from an incompatible version."""


class UnknownClassError(IvadasError):
    """A product class is not in the artifact or data set."""
