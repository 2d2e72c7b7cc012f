"""Tests for sklearn_meta.datasets: glyphs, Omniglot and sinusoid tasks."""

import io
import shutil
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image, ImageDraw

from sklearn_meta.datasets import (
    fetch_omniglot,
    load_image_folder,
    load_omniglot,
    make_glyph_tasks,
    make_sinusoid_tasks,
    omniglot_path,
)

OMNIGLOT = omniglot_path()
needs_omniglot = pytest.mark.skipif(
    not OMNIGLOT.exists(),
    reason=f"Omniglot test data not found at {OMNIGLOT}; set SKLEARN_META_OMNIGLOT",
)


def _png(seed, size=105):
    """Omniglot-like PNG bytes: a black 1-bit stroke on white."""
    rng = np.random.default_rng(seed)
    image = Image.new("1", (size, size), 1)
    points = (rng.uniform(15, size - 15, (4, 2))).ravel().tolist()
    ImageDraw.Draw(image).line(points, fill=0, width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _layout(alphabets=(("Alpha", 2), ("Beta", 3)), n_drawings=4, root="images"):
    """Map file names in the Omniglot layout to PNG bytes."""
    files = {}
    seed = 0
    for alphabet, n_characters in alphabets:
        for c in range(1, n_characters + 1):
            for d in range(1, n_drawings + 1):
                name = f"{root}/{alphabet}/character{c:02d}/{c:02d}{d:02d}_{d:02d}.png"
                files[name] = _png(seed)
                seed += 1
    return files


def _write_folder(base, files):
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return base


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _no_network(*args, **kwargs):
    raise AssertionError("a test tried to reach the network")


@pytest.fixture(scope="module")
def omniglot():
    """The shared Omniglot data, loaded once."""
    return load_omniglot(OMNIGLOT)


# ---------------------------------------------------------------------------
# make_glyph_tasks
# ---------------------------------------------------------------------------


def test_make_glyph_tasks_shapes_and_dtypes():
    """Images are (n, 1, s, s) float32 ink in [0, 1], labels int64 by class."""
    X, y = make_glyph_tasks(n_classes=6, n_per_class=5, random_state=0)
    assert X.shape == (30, 1, 28, 28)
    assert X.dtype == np.float32
    assert y.dtype == np.int64
    assert_array_equal(y, np.repeat(np.arange(6), 5))
    assert X.min() == 0.0 and X.max() == 1.0
    # Thin pen strokes on an empty page, as in Omniglot (about 8% ink).
    ink = X.reshape(30, -1).mean(axis=1)
    assert np.all((ink > 0.02) & (ink < 0.2))


def test_make_glyph_tasks_image_size():
    """image_size sets the side of the images, which still hold a character."""
    X, _ = make_glyph_tasks(n_classes=2, n_per_class=2, image_size=16, random_state=0)
    assert X.shape == (4, 1, 16, 16)
    assert np.all(X.reshape(4, -1).max(axis=1) > 0.5)


def test_make_glyph_tasks_deterministic():
    """The same random_state gives identical arrays, another one does not."""
    X1, y1 = make_glyph_tasks(n_classes=4, n_per_class=3, random_state=7)
    X2, y2 = make_glyph_tasks(n_classes=4, n_per_class=3, random_state=7)
    X3, _ = make_glyph_tasks(n_classes=4, n_per_class=3, random_state=8)
    assert_array_equal(X1, X2)
    assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    rng = np.random.RandomState(7)
    X4, _ = make_glyph_tasks(n_classes=4, n_per_class=3, random_state=rng)
    assert_array_equal(X1, X4)


def test_make_glyph_tasks_prefix_stable():
    """Asking for more classes or drawings keeps the first ones unchanged."""
    small, _ = make_glyph_tasks(n_classes=3, n_per_class=2, random_state=1)
    large, _ = make_glyph_tasks(n_classes=5, n_per_class=4, random_state=1)
    assert_array_equal(small.reshape(3, 2, -1), large.reshape(5, 4, -1)[:3, :2])


def test_make_glyph_tasks_classes_differ():
    """Drawings vary, but less within a class than between classes."""
    X, y = make_glyph_tasks(n_classes=20, n_per_class=10, random_state=0)
    flat = X.reshape(200, -1).astype(np.float64)
    distances = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    same = y[:, None] == y[None]
    other = ~np.eye(200, dtype=bool)
    assert distances[same & other].mean() < distances[~same].mean()
    # No two drawings are the same, within a class or across classes.
    assert distances[other].min() > 0.5
    # Nearest centroid beats chance (1/20) by far: classes are learnable.
    centroids = flat.reshape(20, 10, -1).mean(axis=1)
    nearest = np.linalg.norm(flat[:, None] - centroids[None], axis=-1).argmin(1)
    assert (nearest == y).mean() > 0.5


def test_make_glyph_tasks_return_bunch():
    """return_bunch=True gives data, target, target_names and DESCR."""
    bunch = make_glyph_tasks(
        n_classes=3, n_per_class=2, random_state=0, return_bunch=True
    )
    X, y = make_glyph_tasks(n_classes=3, n_per_class=2, random_state=0)
    assert_array_equal(bunch.data, X)
    assert_array_equal(bunch.target, y)
    assert len(bunch.target_names) == 3
    assert "glyph" in bunch.DESCR.lower()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_classes": 0}, "n_classes=0 is too small"),
        ({"n_classes": 2.5}, "n_classes must be an integer"),
        ({"n_classes": True}, "n_classes must be an integer"),
        ({"n_per_class": 0}, "n_per_class=0 is too small"),
        ({"image_size": 4}, "image_size >= 8"),
        ({"image_size": "28"}, "image_size must be an integer"),
    ],
)
def test_make_glyph_tasks_bad_params(params, match):
    """Out-of-range or non-integer sizes raise a ValueError naming them."""
    with pytest.raises(ValueError, match=match):
        make_glyph_tasks(**params)


# ---------------------------------------------------------------------------
# load_omniglot on the shared data
# ---------------------------------------------------------------------------


@needs_omniglot
def test_load_omniglot_shared_data(omniglot):
    """The two small background zips hold 242 characters of 20 drawings."""
    assert omniglot.data.shape == (4840, 1, 28, 28)
    assert omniglot.data.dtype == np.float32
    assert omniglot.target.dtype == np.int64
    assert len(omniglot.target_names) == 242
    assert_array_equal(np.bincount(omniglot.target), np.full(242, 20))
    assert len(np.unique(omniglot.alphabet)) == 8
    assert omniglot.alphabet.shape == omniglot.target.shape
    assert 0.0 <= omniglot.data.min() and omniglot.data.max() <= 1.0
    # Ink is 1.0 on a 0.0 page: the mean is small, not close to 1.
    assert 0.02 < omniglot.data.mean() < 0.2
    assert "Omniglot" in omniglot.DESCR


@needs_omniglot
def test_load_omniglot_merges_alphabets_across_zips(omniglot):
    """Greek and Latin, in both zips, are one class per character."""
    names = omniglot.target_names
    assert sum(n.startswith("Greek/") for n in names) == 24
    assert sum(n.startswith("Latin/") for n in names) == 26
    assert len(set(names)) == len(names)
    for alphabet in ("Greek", "Latin"):
        targets = omniglot.target[omniglot.alphabet == alphabet]
        assert_array_equal(np.unique(np.bincount(targets)[targets]), [20])
    # The alphabet of each sample matches its class name.
    prefixes = np.array([n.split("/")[0] for n in names])
    assert_array_equal(prefixes[omniglot.target], omniglot.alphabet)


@needs_omniglot
def test_load_omniglot_rotations(omniglot):
    """rotations=True makes 968 classes, each a rotation of a character."""
    rotated = load_omniglot(OMNIGLOT, rotations=True)
    assert rotated.data.shape == (19360, 1, 28, 28)
    assert len(rotated.target_names) == 968
    assert_array_equal(np.bincount(rotated.target), np.full(968, 20))
    assert list(rotated.target_names[:4]) == [
        f"{omniglot.target_names[0]}/rot{angle}" for angle in (0, 90, 180, 270)
    ]
    first = omniglot.data[omniglot.target == 0]
    for k in range(4):
        assert_array_equal(
            rotated.data[rotated.target == k], np.rot90(first, k, axes=(2, 3))
        )
    assert_array_equal(rotated.alphabet[rotated.target == 5], "Balinese")


@needs_omniglot
def test_load_omniglot_alphabets_filter(omniglot):
    """alphabets= keeps only the named alphabets; a string is one name."""
    greek = load_omniglot(OMNIGLOT, alphabets=["Greek"])
    assert greek.data.shape == (480, 1, 28, 28)
    assert set(greek.alphabet) == {"Greek"}
    assert_array_equal(greek.data, omniglot.data[omniglot.alphabet == "Greek"])
    assert_array_equal(load_omniglot(OMNIGLOT, alphabets="Greek").data, greek.data)
    with pytest.raises(ValueError, match=r"alphabets \['Klingon'\] not found"):
        load_omniglot(OMNIGLOT, alphabets=["Greek", "Klingon"])


@needs_omniglot
def test_load_omniglot_drawer_from_file_names():
    """drawer is the DD of CCCC_DD.png, tiled with the images under rotations."""
    tagalog = load_omniglot(OMNIGLOT, alphabets="Tagalog")
    assert tagalog.drawer.dtype == np.int64
    assert tagalog.drawer.shape == tagalog.target.shape
    for c in range(len(tagalog.target_names)):
        assert_array_equal(
            np.sort(tagalog.drawer[tagalog.target == c]), np.arange(1, 21)
        )
    rotated = load_omniglot(OMNIGLOT, alphabets="Tagalog", rotations=True)
    for k in range(4):
        assert_array_equal(rotated.drawer[rotated.target % 4 == k], tagalog.drawer)
        # The drawer goes with its image: rotating back gives the same drawing.
        assert_array_equal(
            np.rot90(rotated.data[rotated.target % 4 == k], -k, axes=(2, 3)),
            tagalog.data,
        )


# ---------------------------------------------------------------------------
# load_omniglot on generated files
# ---------------------------------------------------------------------------


def test_load_omniglot_folder_and_zip_agree(tmp_path):
    """A folder, its zip and a folder of both give the same dataset."""
    files = _layout()
    folder = _write_folder(tmp_path / "folder", files)
    archive = _write_zip(tmp_path / "images.zip", files)
    from_folder = load_omniglot(folder)
    from_zip = load_omniglot(archive)
    assert from_zip.data.shape == (20, 1, 28, 28)
    assert list(from_zip.target_names) == [
        "Alpha/character01",
        "Alpha/character02",
        "Beta/character01",
        "Beta/character02",
        "Beta/character03",
    ]
    assert_array_equal(from_folder.data, from_zip.data)
    assert_array_equal(from_folder.target, from_zip.target)
    # The same files twice, unzipped beside their zip, are read once.
    both = tmp_path / "both"
    _write_folder(both, files)
    _write_zip(both / "images.zip", files)
    assert_array_equal(load_omniglot(both).data, from_zip.data)


def test_load_omniglot_drawer_of_generated_files(tmp_path):
    """drawer reads DD of CCCC_DD.png; a file named otherwise gets -1."""
    files = _layout(alphabets=(("Alpha", 2),), n_drawings=3)
    files["images/Alpha/character01/extra.png"] = _png(99)
    omniglot = load_omniglot(_write_zip(tmp_path / "images.zip", files))
    assert omniglot.drawer.tolist() == [1, 2, 3, -1, 1, 2, 3]


def test_load_omniglot_merges_split_alphabet(tmp_path):
    """An alphabet split over two zips is merged, with shared files once."""
    files = _layout(alphabets=(("Alpha", 2),), n_drawings=4)
    names = sorted(files)
    first = {n.replace("images/", "a/"): files[n] for n in names[:6]}
    second = {n.replace("images/", "b/"): files[n] for n in names[2:]}
    _write_zip(tmp_path / "a.zip", first)
    _write_zip(tmp_path / "b.zip", second)
    merged = load_omniglot(tmp_path)
    assert list(merged.target_names) == ["Alpha/character01", "Alpha/character02"]
    assert_array_equal(merged.target, np.repeat([0, 1], 4))


def test_load_omniglot_grouped_by_class(tmp_path):
    """Samples come grouped by class, even when alphabet names share a prefix."""
    files = _layout(alphabets=(("Alph", 2), ("Alph-x", 1), ("Alph_y", 1)))
    data = load_omniglot(_write_folder(tmp_path, files))
    assert_array_equal(data.target, np.repeat(np.arange(4), 4))
    assert list(data.target_names) == [
        "Alph/character01",
        "Alph/character02",
        "Alph-x/character01",
        "Alph_y/character01",
    ]
    assert_array_equal(
        data.alphabet, np.repeat(["Alph", "Alph-x", "Alph_y"], [8, 4, 4])
    )


def test_load_omniglot_ink_and_resize(tmp_path):
    """Black on white becomes ink 1.0 on 0.0, resized with anti-aliasing."""
    image = Image.new("L", (105, 105), 255)
    ImageDraw.Draw(image).rectangle((0, 0, 56, 104), fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = tmp_path / "Alpha" / "character01" / "0101_01.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(buffer.getvalue())
    data = load_omniglot(tmp_path, image_size=10).data
    assert data.shape == (1, 1, 10, 10)
    assert_allclose(data[0, 0, :, :5], 1.0)
    assert_allclose(data[0, 0, :, 6:], 0.0)
    # The column that straddles the edge is grey, not black or white.
    assert np.all((data[0, 0, :, 5] > 0.0) & (data[0, 0, :, 5] < 1.0))


def test_load_omniglot_ignores_other_files(tmp_path):
    """Files outside the layout and macOS resource forks are skipped."""
    files = _layout(alphabets=(("Alpha", 1),), n_drawings=2)
    files["images/readme.txt"] = b"not an image"
    files["images/Alpha/cover.png"] = _png(99)
    files["__MACOSX/images/Alpha/character01/._0101_01.png"] = b"junk"
    data = load_omniglot(_write_zip(tmp_path / "images.zip", files))
    assert data.data.shape == (2, 1, 28, 28)


def test_load_omniglot_missing_path(tmp_path):
    """A path that does not exist raises a ValueError naming it."""
    with pytest.raises(ValueError, match="does not exist"):
        load_omniglot(tmp_path / "nowhere")


def test_load_omniglot_corrupt_zip(tmp_path):
    """A file that is not a zip raises a ValueError saying so."""
    archive = _write_zip(tmp_path / "images.zip", _layout())
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a valid zip file"):
        load_omniglot(corrupt)
    # Also when the bad zip sits in a folder with good data.
    with pytest.raises(ValueError, match="corrupt.zip is not a valid zip file"):
        load_omniglot(tmp_path)


def test_load_omniglot_corrupt_png(tmp_path):
    """An unreadable image raises a ValueError naming the file."""
    files = _layout(alphabets=(("Alpha", 1),), n_drawings=2)
    files["images/Alpha/character01/0101_09.png"] = b"\x89PNG broken"
    with pytest.raises(ValueError, match="could not read the image .*0101_09.png"):
        load_omniglot(_write_folder(tmp_path, files))


def test_load_omniglot_wrong_layout(tmp_path):
    """Images not laid out as Alphabet/characterNN/*.png raise a ValueError."""
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "0101_01.png").write_bytes(_png(0))
    with pytest.raises(ValueError, match="no Omniglot images found"):
        load_omniglot(flat)
    archive = _write_zip(tmp_path / "flat.zip", {"Alpha/img.png": _png(0)})
    with pytest.raises(ValueError, match="Alphabet/characterNN"):
        load_omniglot(archive)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no Omniglot images found"):
        load_omniglot(empty)


@pytest.mark.parametrize("image_size", [0, -28, 2.5, "28", None])
def test_load_omniglot_bad_image_size(tmp_path, image_size):
    """A non-positive or non-integer image_size raises a ValueError."""
    _write_folder(tmp_path, _layout())
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot(tmp_path, image_size=image_size)


def test_load_omniglot_empty_alphabets(tmp_path):
    """An empty alphabets list raises instead of returning no data."""
    _write_folder(tmp_path, _layout())
    with pytest.raises(ValueError, match="alphabets is empty"):
        load_omniglot(tmp_path, alphabets=[])


def test_omniglot_path_environment(monkeypatch, tmp_path):
    """SKLEARN_META_OMNIGLOT overrides the default location."""
    monkeypatch.setenv("SKLEARN_META_OMNIGLOT", str(tmp_path))
    assert omniglot_path() == tmp_path
    monkeypatch.delenv("SKLEARN_META_OMNIGLOT")
    assert omniglot_path().parts[-3:] == ("shared", "data", "omniglot")


# ---------------------------------------------------------------------------
# fetch_omniglot, never on the network
# ---------------------------------------------------------------------------


def test_fetch_omniglot_offline_leaves_no_file(monkeypatch, tmp_path):
    """Offline, fetch raises a clear ConnectionError and leaves no file."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="offline.*load_omniglot"):
        fetch_omniglot(data_home=tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_fetch_omniglot_interrupted_download_leaves_no_file(monkeypatch, tmp_path):
    """A download cut off half-way leaves no partial file in the cache."""

    class Response(io.BytesIO):
        def read(self, *args):
            if self.tell() > 0:
                raise TimeoutError("timed out")
            return super().read(10)

    monkeypatch.setattr(
        urllib.request, "urlopen", lambda *a, **k: Response(b"PK" + b"x" * 100)
    )
    with pytest.raises(ConnectionError, match="could not download"):
        fetch_omniglot(data_home=tmp_path, subset="evaluation")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_fetch_omniglot_rejects_non_zip(monkeypatch, tmp_path):
    """A download that is not a zip (an error page) is not cached."""
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"<html>moved</html>")
    )
    with pytest.raises(ValueError, match="not a zip file"):
        fetch_omniglot(data_home=tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_fetch_omniglot_downloads_then_caches(monkeypatch, tmp_path):
    """The first call downloads into data_home/omniglot, the next reads it."""
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive:
        for name, data in _layout().items():
            archive.writestr(name, data)
    urls = []

    def fake_urlopen(url, *args, **kwargs):
        urls.append(url)
        return io.BytesIO(payload.getvalue())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    first = fetch_omniglot(data_home=tmp_path, image_size=14)
    assert len(urls) == 1 and urls[0].endswith("python/images_background.zip")
    assert (tmp_path / "omniglot" / "images_background.zip").is_file()
    assert [p.name for p in (tmp_path / "omniglot").iterdir()] == [
        "images_background.zip"
    ]
    second = fetch_omniglot(data_home=tmp_path, image_size=14)
    assert len(urls) == 1
    assert first.data.shape == (20, 1, 14, 14)
    assert_array_equal(first.data, second.data)


def test_fetch_omniglot_reads_cache(monkeypatch, tmp_path):
    """A zip already in the cache is loaded without any download."""
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    (tmp_path / "omniglot").mkdir()
    _write_zip(tmp_path / "omniglot" / "images_evaluation.zip", _layout())
    data = fetch_omniglot(data_home=tmp_path, subset="evaluation", rotations=True)
    assert data.data.shape == (80, 1, 28, 28)
    assert len(data.target_names) == 20


def test_fetch_omniglot_download_if_missing_false(monkeypatch, tmp_path):
    """download_if_missing=False with nothing cached raises, downloading nothing."""
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(FileNotFoundError, match="download_if_missing=False"):
        fetch_omniglot(data_home=tmp_path, download_if_missing=False)


def test_fetch_omniglot_bad_subset(monkeypatch, tmp_path):
    """An unknown subset raises a ValueError listing the valid ones."""
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(ValueError, match="subset='train'.*background"):
        fetch_omniglot(data_home=tmp_path, subset="train")


# ---------------------------------------------------------------------------
# make_sinusoid_tasks
# ---------------------------------------------------------------------------


def test_make_sinusoid_tasks_shapes_and_values():
    """X is (n, 1), y and groups (n,), and each task is one sinusoid."""
    X, y, groups = make_sinusoid_tasks(n_tasks=7, n_points=11, random_state=0)
    assert X.shape == (77, 1) and y.shape == (77,) and groups.shape == (77,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert groups.dtype == np.int64
    assert_array_equal(groups, np.repeat(np.arange(7), 11))
    assert X.min() >= -5.0 and X.max() <= 5.0
    assert np.abs(y).max() <= 5.0
    # Within a task y = a sin(x) + b cos(x) exactly (a sinusoid of any phase).
    for task in range(7):
        x, target = X[groups == task, 0], y[groups == task]
        basis = np.column_stack([np.sin(x), np.cos(x)])
        coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
        assert_allclose(basis @ coef, target, atol=1e-10)
        assert 0.1 <= np.hypot(*coef) <= 5.0


def test_make_sinusoid_tasks_ranges():
    """Custom ranges are respected; a fixed amplitude and phase are allowed."""
    X, y, _ = make_sinusoid_tasks(
        n_tasks=3,
        n_points=50,
        amplitude_range=(2.0, 2.0),
        phase_range=(0.0, 0.0),
        x_range=(0.0, 1.0),
        random_state=0,
    )
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert_allclose(y, 2.0 * np.sin(X[:, 0]))


def test_make_sinusoid_tasks_deterministic():
    """The same random_state gives identical tasks, another one does not."""
    first = make_sinusoid_tasks(n_tasks=5, random_state=3)
    second = make_sinusoid_tasks(n_tasks=5, random_state=3)
    other = make_sinusoid_tasks(n_tasks=5, random_state=4)
    for a, b in zip(first, second, strict=True):
        assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_tasks": 0}, "n_tasks=0 is too small"),
        ({"n_tasks": 1.5}, "n_tasks must be an integer"),
        ({"n_points": 1}, "n_points >= 2"),
        ({"amplitude_range": (5.0, 0.1)}, r"amplitude_range=.*low > high"),
        ({"amplitude_range": (-1.0, 1.0)}, "amplitude_range=.*negative"),
        ({"amplitude_range": (1.0,)}, "amplitude_range must be a pair"),
        ({"phase_range": (np.pi, 0.0)}, "phase_range=.*low > high"),
        ({"phase_range": "ab"}, "phase_range must be a pair"),
        ({"x_range": (5.0, -5.0)}, "x_range=.*low > high"),
        ({"x_range": (1.0, 1.0)}, "x_range=.*empty interval"),
        ({"x_range": (0.0, np.inf)}, "x_range must be finite"),
        ({"x_range": 5.0}, "x_range must be a pair"),
    ],
)
def test_make_sinusoid_tasks_bad_params(params, match):
    """Bad counts and ranges raise a ValueError that names the parameter."""
    with pytest.raises(ValueError, match=match):
        make_sinusoid_tasks(**params)


def _image_folder(root, sizes=((6, 8),), mode="RGB", n_per_class=3):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            height, width = sizes[i % len(sizes)]
            Image.new(mode, (width, height), color=i * 40).save(
                root / name / f"{i}.png"
            )


def test_load_image_folder_reads_classes_as_uint8(tmp_path):
    """One folder per class gives uint8 images (n, C, H, W) and sorted classes."""
    _image_folder(tmp_path / "images")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "stray.png").write_bytes(b"")  # outside any class
    images = load_image_folder(tmp_path / "images")
    assert images.data.dtype == np.uint8
    assert images.data.shape == (6, 3, 6, 8)
    assert images.target.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.target_names.tolist() == ["cat", "dog"]
    assert images.data[1].max() == 40


def test_load_image_folder_zip_agrees_with_folder(tmp_path):
    """A zip of the folder loads the same images."""
    _image_folder(tmp_path / "images")
    archive = shutil.make_archive(str(tmp_path / "images"), "zip", tmp_path / "images")
    from_folder = load_image_folder(tmp_path / "images", color_mode="grayscale")
    from_zip = load_image_folder(archive, color_mode="grayscale")
    assert from_zip.data.shape == (6, 1, 6, 8)
    assert_array_equal(from_zip.data, from_folder.data)
    assert_array_equal(from_zip.target, from_folder.target)


def test_load_image_folder_sizes(tmp_path):
    """Mixed sizes need image_size, which resizes every image."""
    _image_folder(tmp_path, sizes=((6, 8), (10, 10)))
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, image_size=(5, 7)).data.shape == (6, 3, 5, 7)
    assert load_image_folder(tmp_path, image_size=4).data.shape == (6, 3, 4, 4)


def test_load_image_folder_names_every_unreadable_file(tmp_path):
    """The error lists all the files that could not be read."""
    _image_folder(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "dog" / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="2 of 8 images") as error:
        load_image_folder(tmp_path)
    assert "broken.png" in str(error.value) and "empty.jpg" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"color_mode": "cmyk"}, "color_mode"),
        ({"image_size": (1, 2, 3)}, "image_size"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_load_image_folder_bad_arguments(tmp_path, kwargs, match):
    """Bad arguments and layouts get a ValueError that says what to change."""
    _image_folder(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_image_folder(tmp_path, **kwargs)


def test_load_image_folder_without_class_folders(tmp_path):
    """Images with no class folder, or a missing path, are refused clearly."""
    Image.new("RGB", (4, 4)).save(tmp_path / "lonely.png")
    with pytest.raises(ValueError, match="no images found in class folders"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
