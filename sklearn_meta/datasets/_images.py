"""load_image_folder, and the reading of images from folders and zip files
that load_omniglot shares."""

import io
import os
import zipfile
import zlib
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.utils import Bunch

from ._validation import _check_int


def _open_zip(path, stack):
    try:
        return stack.enter_context(zipfile.ZipFile(path))
    except zipfile.BadZipFile:
        raise ValueError(
            f"{path} is not a valid zip file (corrupt or truncated?); "
            "download it again or pass the extracted folder."
        ) from None


def _add_entry(entries, parts, ref, key_of):
    if any(part.startswith(".") or part == "__MACOSX" for part in parts):
        return
    key = key_of(parts)
    # A class that appears in several zips or folders is one class: the
    # first copy of each file wins.
    if key is not None:
        entries.setdefault(key, ref)


def _add_zip(entries, path, stack, key_of):
    archive = _open_zip(path, stack)
    for member in archive.namelist():
        if not member.endswith("/"):
            parts = tuple(member.split("/"))
            _add_entry(entries, parts, (archive, member), key_of)


def _scan(path, stack, key_of):
    """Map ``key_of(parts)`` -> (zip or None, member or path) for a folder or zip.

    ``parts`` are a file's path components (inside a zip: the member's);
    ``key_of`` returns None for files to skip. Zips inside the folder are
    read too.
    """
    entries = {}
    if path.is_file():
        _add_zip(entries, path, stack, key_of)
        return entries
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        parts = Path(dirpath).parts
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.lower().endswith(".zip"):
                _add_zip(entries, full, stack, key_of)
            else:
                _add_entry(entries, (*parts, name), (None, full), key_of)
    return entries


def _open_image(ref, mode):
    """The image at ``ref`` in PIL ``mode``; a ValueError names an unreadable one."""
    archive, member = ref
    try:
        if archive is None:
            data = Path(member).read_bytes()
        else:
            data = archive.read(member)
        return Image.open(io.BytesIO(data)).convert(mode)
    # PIL reports broken files as OSError or SyntaxError, zip members as
    # BadZipFile (bad CRC) or zlib.error.
    except (OSError, SyntaxError, zipfile.BadZipFile, zlib.error) as exc:
        where = member if archive is None else f"{member} in {archive.filename}"
        raise ValueError(f"{where}: {exc}") from None


#: File name endings that load_image_folder reads as images.
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}


def load_image_folder(path, *, image_size=None, color_mode: str = "rgb"):
    """Load images laid out one folder per class, from a folder or a zip file.

    Reads ``[root/]class_name/image.ext`` (PNG, JPEG, BMP, GIF, TIFF or
    WebP), the layout of torchvision's ``ImageFolder``: every folder that
    holds images is a class. The images are returned as ``uint8``, the way
    they are stored: the estimators take them as they are, scaling pixels to
    [0, 1] a batch at a time, so a large set never exists as floats.

    Parameters
    ----------
    path : str or path-like
        A folder, or a zip file, holding one folder per class.
    image_size : int or (int, int), default=None
        ``(height, width)`` (or the side of a square) to resize every image
        to. None keeps the images' own size, which must then be the same for
        all.
    color_mode : {"rgb", "grayscale"}, default="rgb"
        Three channels or one.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        data : ndarray of shape (n_samples, channels, height, width)
            The images, uint8, grouped by class.
        target : ndarray of shape (n_samples,)
            Class labels, int64 in ``0..n_classes - 1``, classes in the
            sorted order of their folder names.
        target_names : ndarray of str of shape (n_classes,)
            The folder name of every class.
        filenames : ndarray of str of shape (n_samples,)
            Where each image was read from.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    ValueError
        If ``path`` does not exist or holds no images in class folders, if
        images are unreadable (all of them are named), or if they differ in
        size and ``image_size`` is None.

    See Also
    --------
    load_omniglot : Omniglot, whose layout has alphabets above the classes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sklearn_meta.datasets import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("cat", "dog"):
    ...     (root / name).mkdir()
    ...     for i in range(3):
    ...         Image.new("RGB", (8, 6)).save(root / name / f"{i}.png")
    >>> images = load_image_folder(root)
    >>> images.data.shape, images.data.dtype, images.target_names.tolist()
    ((6, 3, 6, 8), dtype('uint8'), ['cat', 'dog'])
    """
    if color_mode not in _COLOR_MODES:
        raise ValueError(
            f"color_mode must be one of {sorted(_COLOR_MODES)}, got {color_mode!r}"
        )
    if image_size is not None:
        sides = (image_size, image_size) if np.ndim(image_size) == 0 else image_size
        if len(sides) != 2:
            raise ValueError(
                f"image_size must be an int or a (height, width) pair, got {image_size!r}"
            )
        height = _check_int(sides[0], "image_size", 1)
        width = _check_int(sides[1], "image_size", 1)
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise ValueError(
            f"path {str(path)!r} does not exist; pass a folder or a zip file "
            "holding one folder of images per class."
        )

    def class_and_name(parts):
        # Files of the folder come with its path in front, zip members without.
        below = (
            parts[len(path.parts) :]
            if parts[: len(path.parts)] == path.parts
            else parts
        )
        if len(below) < 2:
            return None  # an image outside any class folder
        if not parts[-1].lower().endswith(_IMAGE_SUFFIXES):
            return None
        return parts[-2], "/".join(parts)

    with ExitStack() as stack:
        entries = _scan(path, stack, class_and_name)
        if not entries:
            raise ValueError(
                f"no images found in class folders of {str(path)!r}: expected "
                "[root/]class_name/image.png (or .jpg, ...) in a folder or a zip file."
            )
        keys = sorted(entries)
        images, failures = [], []
        for key in keys:
            try:
                image = _open_image(entries[key], _COLOR_MODES[color_mode])
            except ValueError as exc:
                failures.append(str(exc))
                continue
            if image_size is not None and image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BICUBIC)
            images.append(np.asarray(image, dtype=np.uint8))
    if failures:
        raise ValueError(
            f"{len(failures)} of {len(keys)} images could not be read; remove or "
            "replace them: " + "; ".join(failures)
        )
    sizes = sorted({image.shape[:2] for image in images})
    if len(sizes) > 1:
        raise ValueError(
            f"the images have {len(sizes)} different sizes (height, width), "
            f"{sizes[:5]}{'...' if len(sizes) > 5 else ''}; pass image_size=... to "
            "resize them to one"
        )
    X = np.stack(images)
    X = X[:, None] if X.ndim == 3 else X.transpose(0, 3, 1, 2)
    X = np.ascontiguousarray(X)
    class_names = sorted({name for name, _ in keys})
    class_ids = {name: i for i, name in enumerate(class_names)}
    y = np.array([class_ids[name] for name, _ in keys], dtype=np.int64)
    filenames = np.array([member for _, member in keys])
    descr = (
        f"Images read from {path}: {len(y)} images of {len(class_names)} classes, "
        f"{X.shape[1]} channel(s) of {X.shape[2]}x{X.shape[3]} pixels, uint8."
    )
    return Bunch(
        data=X,
        target=y,
        target_names=np.array(class_names),
        filenames=filenames,
        DESCR=descr,
    )
