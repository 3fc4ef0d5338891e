"""Which files in a folder are images. What is in the inbox is decided by content instead: every object is
sent to the model, whose decoder tells an image from anything else, whatever the key's suffix."""

#: Lower-case suffixes of the image files listed in data set folders and uploaded by `ivadas inspect`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def has_image_suffix(name: str) -> bool:
    """True for `IMG_0001.JPG` as for `a.png`: cameras write either case."""
    return name.lower().endswith(IMAGE_SUFFIXES)
