"""make_glyph_tasks: procedurally drawn Omniglot-like characters."""

import numpy as np
from PIL import Image, ImageDraw
from sklearn.utils import Bunch, check_random_state

from ._validation import _check_int

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
