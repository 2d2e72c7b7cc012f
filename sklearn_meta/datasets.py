"""Datasets for meta-learning: glyphs, Omniglot and sinusoid regression tasks.

Meta-learning needs many training classes, and no dataset shipped with
scikit-learn has them. This module provides:

- :func:`make_glyph_tasks`, procedurally drawn Omniglot-like characters, the
  embedded default data of the library (no download);
- :func:`load_omniglot`, reading the standard Omniglot layout from a folder or
  a zip file, and :func:`fetch_omniglot`, which downloads and caches it in the
  style of scikit-learn's ``fetch_*`` functions;
- :func:`load_image_folder`, any images laid out one folder per class, as
  ``uint8`` (the estimators scale pixels a batch at a time);
- :func:`make_sinusoid_tasks`, the regression benchmark of MAML.

Only numpy and PIL are used here: loading data never imports torch.
"""

import http.client
import io
import numbers
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.datasets import get_data_home
from sklearn.utils import Bunch, check_random_state

__all__ = [
    "fetch_omniglot",
    "load_image_folder",
    "load_omniglot",
    "make_glyph_tasks",
    "make_sinusoid_tasks",
    "omniglot_path",
]

# Glyph geometry, in the unit square. The jitter is calibrated so that raw-pixel
# nearest-centroid 5-way 1-shot accuracy on held-out classes is about 48% (41%
# on the eight Omniglot alphabets of images_background_small1/2): classes are
# distinguishable, yet drawings of one class vary enough that a learned
# embedding pays off. Less jitter makes the glyphs a pixel-matching exercise.
_SUPERSAMPLE = 4
_MARGIN = 0.18
_STROKE_WIDTH = 0.06  # of the image side: Omniglot's pen is ~6 of 105 pixels
_N_BEZIER_POINTS = 24
_STROKE_LENGTH = (0.4, 0.9)
_CONNECT_PROB = 0.5
_POINT_JITTER = 0.07
_ROTATION_SD = np.deg2rad(12.0)
_SCALE_SD = 0.1
_SHIFT_SD = 0.075

_OMNIGLOT_URL = (
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
    "images_{subset}.zip"
)
_OMNIGLOT_SUBSETS = ("background", "evaluation")
_CHARACTER_DIR = re.compile(r"^character\d+$")
_ROTATIONS = (0, 90, 180, 270)


def _check_int(value, name, minimum, hint=""):
    """Return ``value`` as an int, or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} "
            f"of type {type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(f"{name}={value} is too small{hint}; use {name} >= {minimum}.")
    return int(value)


def _check_range(value, name, *, strict=False, nonnegative=False):
    """Return ``value`` as a ``(low, high)`` pair of floats, or raise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair of numbers (low, high), got {value!r}."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if low > high:
        relation = "<" if strict else "<="
        raise ValueError(
            f"{name}={value!r} has low > high; pass (low, high) with "
            f"low {relation} high."
        )
    if strict and low == high:
        raise ValueError(
            f"{name}={value!r} is an empty interval; pass (low, high) with low < high."
        )
    if nonnegative and low < 0:
        raise ValueError(
            f"{name}={value!r} contains negative values; "
            "a negative amplitude is a phase shift by pi: use low >= 0."
        )
    return low, high


# ----------------------------------------------------------------------------
# Procedural glyphs
# ----------------------------------------------------------------------------


def _glyph_strokes(rng):
    """Draw the control points of one character, shape (n_strokes, 3, 2)."""
    n_strokes = int(rng.integers(2, 5))
    strokes = np.empty((n_strokes, 3, 2))
    for i in range(n_strokes):
        if i > 0 and rng.random() < _CONNECT_PROB:
            # Strokes of real characters touch: start on an earlier stroke.
            j = rng.integers(i)
            t = rng.random()
            start = (
                (1 - t) ** 2 * strokes[j, 0]
                + 2 * (1 - t) * t * strokes[j, 1]
                + t**2 * strokes[j, 2]
            )
        else:
            start = rng.random(2)
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(*_STROKE_LENGTH)
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        bend = rng.uniform(-0.6, 0.6) * length
        normal = np.array([-np.sin(angle), np.cos(angle)])
        middle = (start + end) / 2 + bend * normal
        strokes[i] = np.clip([start, middle, end], 0.0, 1.0)
    # Characters are drawn in the middle of the page, not in a corner.
    low, high = strokes.reshape(-1, 2).min(0), strokes.reshape(-1, 2).max(0)
    return strokes + (1.0 - low - high) / 2


def _glyph_drawings(strokes, n_per_class, rng):
    """Jitter and move a character's strokes: (n_per_class, n_strokes, T, 2)."""
    n_strokes = strokes.shape[0]
    # One row of noise per drawing, so drawing i does not depend on how many
    # drawings are requested after it.
    noise = rng.standard_normal((n_per_class, n_strokes * 6 + 4))
    ctrl = strokes + _POINT_JITTER * noise[:, : n_strokes * 6].reshape(
        n_per_class, n_strokes, 3, 2
    )
    theta = _ROTATION_SD * noise[:, -4]
    scale = np.exp(_SCALE_SD * noise[:, -3])
    shift = _SHIFT_SD * noise[:, -2:]
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    affine = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    ctrl = np.einsum("nij,nspj->nspi", affine, ctrl - 0.5) + 0.5
    ctrl += shift[:, None, None, :]

    t = np.linspace(0.0, 1.0, _N_BEZIER_POINTS)
    basis = np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2], axis=1)
    return np.einsum("tk,nskd->nstd", basis, ctrl)


def make_glyph_tasks(
    n_classes: int = 100,
    n_per_class: int = 20,
    image_size: int = 28,
    *,
    random_state=None,
    return_bunch: bool = False,
):
    """Generate Omniglot-like handwritten characters, many classes of them.

    Each class is a character made of 2 to 4 quadratic Bezier strokes with
    control points in the unit square; a later stroke starts on an earlier
    one half of the time, as in real scripts. Every drawing of a class
    jitters the control points and applies a small random rotation, scale
    and shift, like a different hand drawing the same character. Drawings are
    rendered with an Omniglot-like pen width at 4x the resolution and
    downsampled, which anti-aliases them.

    This is the embedded default data of sklearn-meta: meta-learning needs
    many training classes, and it costs no download.

    Parameters
    ----------
    n_classes : int, default=100
        Number of characters (classes).
    n_per_class : int, default=20
        Number of drawings of each character (Omniglot has 20).
    image_size : int, default=28
        Side of the square images, in pixels (at least 8).
    random_state : int, RandomState instance or None, default=None
        Seeds the characters and their drawings. The first ``k`` classes and
        the first ``m`` drawings of each are the same whatever larger
        ``n_classes`` and ``n_per_class`` are asked for.
    return_bunch : bool, default=False
        If True, return a :class:`~sklearn.utils.Bunch` instead of
        ``(X, y)``.

    Returns
    -------
    X : ndarray of shape (n_classes * n_per_class, 1, image_size, image_size)
        The images, float32, ink 1.0 on a 0.0 background, grouped by class.
    y : ndarray of shape (n_classes * n_per_class,)
        The class labels, int64 in ``0..n_classes - 1``.
    bunch : :class:`~sklearn.utils.Bunch`
        Only when ``return_bunch=True``: ``data`` (``X``), ``target``
        (``y``), ``target_names`` and ``DESCR``.

    See Also
    --------
    load_omniglot : The real handwritten characters.

    Examples
    --------
    >>> from sklearn_meta.datasets import make_glyph_tasks
    >>> X, y = make_glyph_tasks(n_classes=5, n_per_class=3, random_state=0)
    >>> X.shape, X.dtype, y[:6]
    ((15, 1, 28, 28), dtype('float32'), array([0, 0, 0, 1, 1, 1]))
    >>> float(X.min()), float(X.max())
    (0.0, 1.0)
    """
    n_classes = _check_int(n_classes, "n_classes", 1)
    n_per_class = _check_int(n_per_class, "n_per_class", 1)
    image_size = _check_int(image_size, "image_size", 8, hint=" to draw a character")
    rng = check_random_state(random_state)
    # A seed per class keeps class c the same whatever n_classes is.
    class_seeds = rng.randint(np.iinfo(np.int32).max, size=n_classes)

    canvas = image_size * _SUPERSAMPLE
    width = max(1, round(_STROKE_WIDTH * canvas))
    radius = width / 2
    X = np.empty((n_classes * n_per_class, 1, image_size, image_size), np.float32)
    for c, seed in enumerate(class_seeds):
        class_rng = np.random.default_rng(seed)
        strokes = _glyph_strokes(class_rng)
        points = _glyph_drawings(strokes, n_per_class, class_rng)
        points = (_MARGIN + (1 - 2 * _MARGIN) * points) * canvas
        for i, drawing in enumerate(points):
            image = Image.new("L", (canvas, canvas), 0)
            draw = ImageDraw.Draw(image)
            for stroke in drawing:
                draw.line(stroke.ravel().tolist(), fill=255, width=width)
                # PIL draws flat line ends; a pen leaves round ones.
                for px, py in (stroke[0], stroke[-1]):
                    draw.ellipse(
                        (px - radius, py - radius, px + radius, py + radius), fill=255
                    )
            image = image.reduce(_SUPERSAMPLE)
            X[c * n_per_class + i, 0] = np.asarray(image, dtype=np.float32)
    X /= 255.0
    y = np.repeat(np.arange(n_classes, dtype=np.int64), n_per_class)
    if not return_bunch:
        return X, y
    return Bunch(
        data=X,
        target=y,
        target_names=np.array([f"glyph{c:04d}" for c in range(n_classes)]),
        DESCR=(
            f"Procedural glyphs: {n_classes} Omniglot-like characters drawn "
            f"{n_per_class} times each, {image_size}x{image_size} pixels, "
            "ink 1.0 on 0.0 (sklearn_meta.datasets.make_glyph_tasks)."
        ),
    )


# ----------------------------------------------------------------------------
# Omniglot
# ----------------------------------------------------------------------------


def omniglot_path() -> Path:
    """Return the default location of the Omniglot data.

    The environment variable ``SKLEARN_META_OMNIGLOT`` if it is set; else
    ``../shared/data/omniglot`` relative to the current working directory if
    that folder exists; else the same path relative to the repository root
    (the parent of the package folder). The returned path may not exist.

    Returns
    -------
    path : pathlib.Path
        A folder (or zip file) that :func:`load_omniglot` can read.

    Examples
    --------
    >>> from sklearn_meta.datasets import omniglot_path
    >>> isinstance(omniglot_path(), Path)
    True
    """
    env = os.environ.get("SKLEARN_META_OMNIGLOT")
    if env:
        return Path(env).expanduser()
    relative = Path("..", "shared", "data", "omniglot")
    from_cwd = Path.cwd() / relative
    if from_cwd.exists():
        return from_cwd.resolve()
    return (Path(__file__).resolve().parent.parent / relative).resolve()


def _open_zip(path, stack):
    try:
        return stack.enter_context(zipfile.ZipFile(path))
    except zipfile.BadZipFile:
        raise ValueError(
            f"{path} is not a valid zip file (corrupt or truncated?); "
            "download it again or pass the extracted folder."
        ) from None


def _omniglot_key(parts):
    """(alphabet, character, name) if ``parts`` end in Alphabet/characterNN/name.png."""
    if len(parts) < 3:
        return None
    alphabet, character, name = parts[-3:]
    if not name.lower().endswith(".png") or not _CHARACTER_DIR.match(character):
        return None
    return alphabet, character, name


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


def _read_ink(ref, image_size):
    try:
        image = _open_image(ref, "L")
    except ValueError as exc:
        raise ValueError(f"could not read the image {exc}") from None
    if image.size != (image_size, image_size):
        # BOX averages the covered area when shrinking: anti-aliased, and no
        # ringing that would push ink outside [0, 1].
        shrink = image_size <= min(image.size)
        resample = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
        image = image.resize((image_size, image_size), resample)
    return 1.0 - np.asarray(image, dtype=np.float32) / 255.0


def load_omniglot(
    path,
    *,
    image_size: int = 28,
    rotations: bool = False,
    alphabets: Iterable[str] | str | None = None,
):
    """Load the Omniglot handwritten characters from a folder or zip file.

    Reads the standard layout ``[root/]Alphabet/characterNN/*.png`` of the
    Omniglot repository (Lake et al., 2015) from an extracted folder, a zip
    file such as ``images_background.zip``, or a folder holding several of
    them. An alphabet found in several zips or folders is merged: the same
    alphabet and character are one class, and files with the same name are
    read once.

    Parameters
    ----------
    path : str or path-like
        A folder or a zip file, see :func:`omniglot_path` for the default.
    image_size : int, default=28
        Side of the square output images; the 105x105 originals are resized
        with anti-aliasing.
    rotations : bool, default=False
        If True, add the 90, 180 and 270 degree rotations of every character
        as new classes (the usual augmentation of the few-shot literature),
        which makes four times as many classes.
    alphabets : str or list of str, default=None
        Keep only these alphabets (folder names, such as ``"Greek"``).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        data : ndarray of shape (n_samples, 1, image_size, image_size)
            The images, float32, ink 1.0 on a 0.0 background, grouped by
            class.
        target : ndarray of shape (n_samples,)
            Class labels, int64 in ``0..n_classes - 1``, classes sorted by
            alphabet and character. With ``rotations=True`` the four
            rotations of character ``c`` are classes ``4c`` to ``4c + 3``.
        target_names : ndarray of str of shape (n_classes,)
            ``"Alphabet/characterNN"``, with a suffix ``"/rot0"``,
            ``"/rot90"``, ``"/rot180"`` or ``"/rot270"`` if ``rotations``.
        alphabet : ndarray of str of shape (n_samples,)
            The alphabet of each sample, to split by alphabet.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    ValueError
        If ``path`` does not exist, is not a valid zip file, holds no images
        in the Omniglot layout, or if an argument is out of range.

    See Also
    --------
    fetch_omniglot : Download Omniglot and load it.
    make_glyph_tasks : Procedural Omniglot-like characters.

    References
    ----------
    .. [1] B. M. Lake, R. Salakhutdinov and J. B. Tenenbaum, "Human-level
       concept learning through probabilistic program induction", Science
       350 (6266), 2015.

    Examples
    --------
    >>> from sklearn_meta.datasets import load_omniglot, omniglot_path
    >>> omniglot = load_omniglot(omniglot_path(), alphabets=["Greek"])
    >>> omniglot.data.shape, len(omniglot.target_names)
    ((480, 1, 28, 28), 24)
    >>> str(omniglot.target_names[0])
    'Greek/character01'
    """
    image_size = _check_int(image_size, "image_size", 1)
    if isinstance(alphabets, str):
        alphabets = [alphabets]
    elif alphabets is not None:
        alphabets = list(alphabets)
        if not alphabets:
            raise ValueError(
                "alphabets is empty; pass None to keep every alphabet, or "
                "a list of alphabet names."
            )
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise ValueError(
            f"path {str(path)!r} does not exist; pass the folder or zip file "
            "holding Omniglot (Alphabet/characterNN/*.png), or use "
            "fetch_omniglot() to download it."
        )

    with ExitStack() as stack:
        entries = _scan(path, stack, _omniglot_key)
        if not entries:
            raise ValueError(
                f"no Omniglot images found in {str(path)!r}: expected PNG files "
                "laid out as [root/]Alphabet/characterNN/*.png in a folder or "
                "a zip file (such as images_background.zip)."
            )
        if alphabets is not None:
            found = {alphabet for alphabet, _, _ in entries}
            missing = [a for a in alphabets if a not in found]
            if missing:
                raise ValueError(
                    f"alphabets {missing} not found in {str(path)!r}; "
                    f"choose among {sorted(found)}."
                )
            keep = set(alphabets)
            entries = {k: v for k, v in entries.items() if k[0] in keep}
        keys = sorted(entries)
        X = np.empty((len(keys), 1, image_size, image_size), np.float32)
        for i, key in enumerate(keys):
            X[i, 0] = _read_ink(entries[key], image_size)

    # Class ids follow the sorted (alphabet, character) pairs, not the joined
    # strings, whose order differs ("A-b/..." < "A/...") and would interleave
    # the classes of the sorted samples.
    pairs = [(alphabet, character) for alphabet, character, _ in keys]
    class_ids = {pair: i for i, pair in enumerate(sorted(set(pairs)))}
    y = np.array([class_ids[pair] for pair in pairs], dtype=np.int64)
    class_names = np.array([f"{a}/{c}" for a, c in class_ids])
    alphabet = np.array([alphabet for alphabet, _, _ in keys])
    if rotations:
        X = np.concatenate([np.rot90(X, k, axes=(2, 3)) for k in range(4)])
        y = np.concatenate([4 * y + k for k in range(4)])
        order = np.argsort(y, kind="stable")
        X, y = np.ascontiguousarray(X[order]), y[order]
        alphabet = np.tile(alphabet, 4)[order]
        class_names = np.array(
            [f"{name}/rot{angle}" for name in class_names for angle in _ROTATIONS]
        )
    n_classes = len(class_names)
    descr = (
        "Omniglot handwritten characters (Lake et al., 2015), read from "
        f"{path}.\n\n"
        f"{len(y)} images of {n_classes} classes from "
        f"{len(np.unique(alphabet))} alphabets, {image_size}x{image_size} "
        "pixels, ink 1.0 on 0.0"
        + (", with 90/180/270 degree rotations as extra classes" if rotations else "")
        + ".\nSource: https://github.com/brendenlake/omniglot (MIT License)."
    )
    return Bunch(
        data=X, target=y, target_names=class_names, alphabet=alphabet, DESCR=descr
    )


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


def _download(url, target):
    """Download ``url`` to ``target``; on failure leave no file behind."""
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    by_hand = "download it by hand and use load_omniglot(path)"
    try:
        try:
            with (
                os.fdopen(fd, "wb") as tmp,
                urllib.request.urlopen(url, timeout=60) as response,
            ):
                shutil.copyfileobj(response, tmp)
        except urllib.error.HTTPError as exc:
            raise ConnectionError(
                f"could not download Omniglot from {url}: the server answered "
                f"{exc.code} {exc.reason}; {by_hand}."
            ) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise ConnectionError(
                f"could not download Omniglot from {url} ({exc}); you appear "
                f"to be offline: {by_hand}."
            ) from exc
        except http.client.HTTPException as exc:
            raise ConnectionError(
                f"the download of Omniglot from {url} broke off ({exc!r}); try "
                f"again, or {by_hand}."
            ) from exc
        if not zipfile.is_zipfile(tmp_name):
            raise ValueError(
                f"the file downloaded from {url} is not a zip file; {by_hand}."
            )
        # Atomic, so the cache only ever holds complete files.
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def fetch_omniglot(
    data_home=None,
    subset: str = "background",
    *,
    image_size: int = 28,
    rotations: bool = False,
    download_if_missing: bool = True,
):
    """Load Omniglot, downloading it into ``data_home`` the first time.

    Downloads ``images_background.zip`` (964 characters of 30 alphabets) or
    ``images_evaluation.zip`` (659 characters of 20 other alphabets) from the
    Omniglot repository and caches it in ``data_home/omniglot``. The download
    goes to a temporary file renamed only once complete, so an interrupted
    or offline attempt leaves no partial file.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Where to cache the data; by default ``~/scikit_learn_data``, see
        :func:`sklearn.datasets.get_data_home`.
    subset : {"background", "evaluation"}, default="background"
        The Omniglot split: ``"background"`` to meta-train on,
        ``"evaluation"`` (different alphabets) to test on.
    image_size : int, default=28
        Side of the square output images.
    rotations : bool, default=False
        If True, add the rotations of every character as new classes, see
        :func:`load_omniglot`.
    download_if_missing : bool, default=True
        If False, raise an error instead of downloading missing data.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        As returned by :func:`load_omniglot`.

    Raises
    ------
    ConnectionError
        If the download fails, for instance offline.
    FileNotFoundError
        If the data is not cached and ``download_if_missing=False``.
    ValueError
        If ``subset`` is unknown, or the download is not a zip file.

    See Also
    --------
    load_omniglot : Load Omniglot from a folder or zip file.

    Examples
    --------
    >>> from sklearn_meta.datasets import fetch_omniglot
    >>> omniglot = fetch_omniglot(subset="evaluation")  # doctest: +SKIP
    >>> omniglot.data.shape  # doctest: +SKIP
    (13180, 1, 28, 28)
    """
    if subset not in _OMNIGLOT_SUBSETS:
        raise ValueError(
            f"subset={subset!r} is not an Omniglot subset; use one of "
            f"{list(_OMNIGLOT_SUBSETS)}."
        )
    image_size = _check_int(image_size, "image_size", 1)
    folder = Path(get_data_home(data_home)) / "omniglot"
    archive = folder / f"images_{subset}.zip"
    url = _OMNIGLOT_URL.format(subset=subset)
    if not archive.exists():
        if not download_if_missing:
            raise FileNotFoundError(
                f"Omniglot {subset!r} is not in {folder} and "
                "download_if_missing=False; set download_if_missing=True, or "
                f"download {url} into that folder."
            )
        folder.mkdir(parents=True, exist_ok=True)
        _download(url, archive)
    return load_omniglot(archive, image_size=image_size, rotations=rotations)


# ----------------------------------------------------------------------------
# Sinusoid regression
# ----------------------------------------------------------------------------


def make_sinusoid_tasks(
    n_tasks: int = 100,
    n_points: int = 20,
    *,
    amplitude_range=(0.1, 5.0),
    phase_range=(0.0, np.pi),
    x_range=(-5.0, 5.0),
    random_state=None,
):
    """Generate sinusoid regression tasks, the regression benchmark of MAML.

    Task ``i`` is ``y = A_i * sin(x - phi_i)`` with amplitude ``A_i`` and phase
    ``phi_i`` drawn uniformly from their ranges, and ``n_points`` inputs
    drawn uniformly from ``x_range`` (Finn et al., 2017).

    Parameters
    ----------
    n_tasks : int, default=100
        Number of tasks (sinusoids).
    n_points : int, default=20
        Number of points per task, at least 2 (a support and a query point).
    amplitude_range : tuple of float, default=(0.1, 5.0)
        ``(low, high)`` of the amplitudes, ``0 <= low <= high``.
    phase_range : tuple of float, default=(0, pi)
        ``(low, high)`` of the phases, ``low <= high``.
    x_range : tuple of float, default=(-5.0, 5.0)
        ``(low, high)`` of the inputs, ``low < high``.
    random_state : int, RandomState instance or None, default=None
        Seeds the tasks and their points.

    Returns
    -------
    X : ndarray of shape (n_tasks * n_points, 1)
        The inputs, float64, grouped by task.
    y : ndarray of shape (n_tasks * n_points,)
        The targets, float64.
    groups : ndarray of shape (n_tasks * n_points,)
        The task of each point, int64 in ``0..n_tasks - 1``: pass it as
        ``fit(X, y, groups=groups)``.

    References
    ----------
    .. [1] C. Finn, P. Abbeel and S. Levine, "Model-Agnostic Meta-Learning
       for Fast Adaptation of Deep Networks", ICML 2017.

    Examples
    --------
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=3, n_points=4, random_state=0)
    >>> X.shape, y.shape, groups
    ((12, 1), (12,), array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]))
    """
    n_tasks = _check_int(n_tasks, "n_tasks", 1)
    n_points = _check_int(
        n_points, "n_points", 2, hint=": a task needs a support and a query point"
    )
    amplitude_range = _check_range(amplitude_range, "amplitude_range", nonnegative=True)
    phase_range = _check_range(phase_range, "phase_range")
    x_range = _check_range(x_range, "x_range", strict=True)
    rng = check_random_state(random_state)

    amplitude = rng.uniform(*amplitude_range, size=n_tasks)
    phase = rng.uniform(*phase_range, size=n_tasks)
    x = rng.uniform(*x_range, size=(n_tasks, n_points))
    y = amplitude[:, None] * np.sin(x - phase[:, None])
    groups = np.repeat(np.arange(n_tasks, dtype=np.int64), n_points)
    return x.reshape(-1, 1), y.ravel(), groups
