"""Omniglot: its default location, load_omniglot and fetch_omniglot."""

import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import get_data_home
from sklearn.utils import Bunch

from ._images import _open_image, _scan
from ._validation import _check_int

_OMNIGLOT_URL = (
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
    "images_{subset}.zip"
)
_OMNIGLOT_SUBSETS = ("background", "evaluation")
_CHARACTER_DIR = re.compile(r"^character\d+$")
# Omniglot's images are CCCC_DD.png: character CCCC drawn by drawer DD.
_DRAWER = re.compile(r"_(\d+)\.png$", re.IGNORECASE)
_ROTATIONS = (0, 90, 180, 270)


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
    return (Path(__file__).resolve().parents[2] / relative).resolve()


def _omniglot_key(parts):
    """(alphabet, character, name) if ``parts`` end in Alphabet/characterNN/name.png."""
    if len(parts) < 3:
        return None
    alphabet, character, name = parts[-3:]
    if not name.lower().endswith(".png") or not _CHARACTER_DIR.match(character):
        return None
    return alphabet, character, name


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
        drawer : ndarray of int64 of shape (n_samples,)
            Who drew each sample: the number ``DD`` of its file name
            ``CCCC_DD.png`` (1 to 20), or -1 for a file not named so. Pass
            it as ``sources`` to
            :func:`~sklearn_meta.model_selection.evaluate_few_shot` so that
            support and query drawings are by different people.
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
    >>> omniglot.drawer[:3].tolist()
    [1, 2, 3]
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
    drawer = np.array([_drawer(name) for _, _, name in keys], dtype=np.int64)
    if rotations:
        X = np.concatenate([np.rot90(X, k, axes=(2, 3)) for k in range(4)])
        y = np.concatenate([4 * y + k for k in range(4)])
        order = np.argsort(y, kind="stable")
        X, y = np.ascontiguousarray(X[order]), y[order]
        alphabet = np.tile(alphabet, 4)[order]
        drawer = np.tile(drawer, 4)[order]
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
        data=X,
        target=y,
        target_names=class_names,
        alphabet=alphabet,
        drawer=drawer,
        DESCR=descr,
    )


def _drawer(name: str) -> int:
    match = _DRAWER.search(name)
    return int(match.group(1)) if match else -1


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
