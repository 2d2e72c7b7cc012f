"""How the cost of ``fit``, ``transform`` and evaluation grows with the data.

Prints one JSON line with:

- ``fit``: for glyph images (5k / 20k / 80k) and tabular rows (5k / 80k /
  320k x 50 features), ``MetaMetricClassifier`` with its defaults for 1 epoch
  of 100 episodes (10 with ``--quick``): seconds of the training loop,
  seconds of the rest of ``fit``, seconds of one float32 ``transform`` of
  the training set (the reference the rest of ``fit`` is judged against),
  their ratio, and the peak resident memory and its growth during ``fit``
  beyond what the process held with the data loaded. Each size runs in a fresh process.
- ``transform``: images per second of ``transform`` and of a plain float32
  ``eval()`` forward of the same network on the same images in the same
  chunks, alternated.
- ``chunks``: milliseconds an image of an ``eval()`` forward of the Conv4
  backbones on 28x28 and 3x84x84 images, by chunk size, the library's first.
- ``evaluation``: seconds of ``evaluate_few_shot`` over 1000 5-way 1-shot
  episodes against one ``transform`` of the samples they draw.
- ``memmap``: a 30,000 x 3 x 84 x 84 uint8 ``np.memmap`` fitted (stride-2
  Conv4) in a fresh process: its peak resident memory (the file's pages it
  has read included) and its peak anonymous memory.

Run ``python benchmarks/scale.py`` (``--quick`` for small sizes only). To
measure another checkout, put it first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

THREADS = 2


#: The settings the documentation's figures were measured with (the
#: estimator's defaults until they changed to a cheaper training recipe).
MEASURED_SETTINGS = dict(n_way=5, n_query=15, meta_lr=1e-3, meta_lr_schedule="constant")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakAnonymous:
    """Peak anonymous resident memory (MB) while in the block, polled.

    Unlike the peak resident set, it leaves out the pages of a memmap's file
    that the process has read (file-backed, the kernel may drop them).
    """

    def __enter__(self):
        import threading

        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.05):
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("RssAnon:"):
                        mb = int(line.split()[1]) / 1024
                        self.peak_mb = max(self.peak_mb, mb)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _data(kind: str, n_samples: int):
    if kind == "images":
        from sklearn_meta.datasets import make_glyph_tasks

        return make_glyph_tasks(
            n_classes=n_samples // 20, n_per_class=20, random_state=0
        )
    rng = np.random.default_rng(0)
    n_classes = 500
    centres = rng.normal(size=(n_classes, 50)).astype(np.float32) * 2
    y = np.arange(n_samples) % n_classes
    X = centres[y] + rng.normal(size=(n_samples, 50)).astype(np.float32)
    return X, y


def _fit_case(kind: str, n_samples: int, episodes: int) -> dict:
    """One fit in this (fresh) process: phases and memory."""
    import torch

    from sklearn_meta import MetaMetricClassifier

    torch.set_num_threads(THREADS)
    X, y = _data(kind, n_samples)
    # A first small fit imports what fit needs (torch's optimisers import
    # torch._dynamo, many seconds on a loaded machine): not data-path work.
    small = np.isin(y, np.unique(y)[:10])
    MetaMetricClassifier(max_epochs=1, episodes_per_epoch=1, device="cpu").fit(
        X[small], y[small]
    )
    before_mb = _current_mb()
    clf = MetaMetricClassifier(
        **MEASURED_SETTINGS,
        backbone="conv4" if X.ndim == 4 else "mlp",
        max_epochs=1,
        episodes_per_epoch=episodes,
        random_state=0,
        device="cpu",
    )
    start = time.perf_counter()
    clf.fit(X, y)
    total = time.perf_counter() - start
    peak = _peak_mb()
    loop = float(sum(clf.history_[:, "dur"]))
    if "inference_dtype" in clf.get_params():
        clf.set_params(inference_dtype="float32")
    start = time.perf_counter()
    clf.transform(X)
    transform = time.perf_counter() - start
    return {
        "kind": kind,
        "n_samples": n_samples,
        "n_classes": len(np.unique(y)),
        "data_mb": round(X.nbytes / 2**20, 1),
        "training_loop_s": round(loop, 2),
        "rest_of_fit_s": round(total - loop, 2),
        "transform_s": round(transform, 2),
        "rest_over_transform": round((total - loop) / transform, 2),
        "peak_mb": round(peak),
        "growth_mb": round(peak - before_mb),
    }


def _throughput_case(n_samples: int, repeats: int) -> dict:
    """transform vs a plain float32 eval() forward, alternated."""
    import torch

    from sklearn_meta import MetaMetricClassifier
    from sklearn_meta._data import Samples
    from sklearn_meta.datasets import make_glyph_tasks

    torch.set_num_threads(THREADS)
    X, y = make_glyph_tasks(n_classes=n_samples // 20, n_per_class=20, random_state=0)
    clf = MetaMetricClassifier(
        **MEASURED_SETTINGS,
        backbone="conv4",
        max_epochs=1,
        episodes_per_epoch=5,
        random_state=0,
        device="cpu",
    ).fit(X, y)
    backbone = clf.module_.backbone.eval()
    images = torch.as_tensor(X)
    # The chunks transform uses: the reference measures the data path's
    # overhead, not the choice of chunk size.
    chunk_size = Samples(X).chunk_size

    def plain():
        with torch.no_grad():
            for start in range(0, len(images), chunk_size):
                backbone(images[start : start + chunk_size])

    timings = {"transform": [], "plain": []}
    for _ in range(repeats):
        for name, run in (("transform", lambda: clf.transform(X)), ("plain", plain)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in timings.items()}
    return {
        "n_samples": n_samples,
        "transform_images_per_s": round(n_samples / best["transform"]),
        "plain_images_per_s": round(n_samples / best["plain"]),
        "transform_over_plain": round(best["transform"] / best["plain"], 2),
    }


def _chunk_case() -> list[dict]:
    """Milliseconds an image of an eval() forward, by chunk size and network.

    The library's chunk (``Samples.chunk_size``) is the first size listed.
    """
    import torch

    from sklearn_meta._data import Samples
    from sklearn_meta.nn.backbones import make_backbone

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    result = []
    for kind, shape, n_samples in (
        ("conv4_strided", (1, 28, 28), 4096),
        ("conv4", (1, 28, 28), 2048),
        ("conv4", (3, 84, 84), 256),
    ):
        backbone = make_backbone(kind, shape).eval()
        images = torch.rand(n_samples, *shape)
        chosen = Samples(images.numpy()).chunk_size
        sizes = dict.fromkeys(
            min(size, n_samples) for size in (chosen, 1024, 256, 64, 16, 8)
        )
        best = dict.fromkeys(sizes, float("inf"))
        with torch.no_grad():
            # Two rounds, the best of each size: the first pass of a size
            # also pays for its allocations.
            for _ in range(2):
                for chunk_size in sizes:
                    start = time.perf_counter()
                    for first in range(0, n_samples, chunk_size):
                        backbone(images[first : first + chunk_size])
                    elapsed = time.perf_counter() - start
                    best[chunk_size] = min(best[chunk_size], elapsed)
        milliseconds = {
            size: round(1000 * seconds / n_samples, 3) for size, seconds in best.items()
        }
        result.append(
            {
                "backbone": kind,
                "shape": list(shape),
                "chunk_size": chosen,
                "ms_per_image": milliseconds,
            }
        )
    return result


def _evaluation_case(n_samples: int) -> dict:
    """1000 episodes of evaluate_few_shot vs one transform of the drawn samples."""
    import torch

    from sklearn_meta import MetaMetricClassifier
    from sklearn_meta.datasets import make_glyph_tasks
    from sklearn_meta.model_selection import _draw_episodes, evaluate_few_shot

    torch.set_num_threads(THREADS)
    X, y = make_glyph_tasks(n_classes=n_samples // 20, n_per_class=20, random_state=0)
    clf = MetaMetricClassifier(
        **MEASURED_SETTINGS,
        backbone="conv4",
        max_epochs=1,
        episodes_per_epoch=5,
        random_state=0,
        device="cpu",
    ).fit(X, y)
    *_, episodes = _draw_episodes(X, y, None, 5, 1, 15, 1000, 0)
    drawn = np.unique(
        np.concatenate(
            [
                episodes.support_index.numpy().ravel(),
                episodes.query_index.numpy().ravel(),
            ]
        )
    )
    start = time.perf_counter()
    evaluate_few_shot(clf, X, y, n_episodes=1000, random_state=0)
    evaluation = time.perf_counter() - start
    start = time.perf_counter()
    clf.transform(X[drawn])
    transform = time.perf_counter() - start
    return {
        "pool": n_samples,
        "drawn": len(drawn),
        "evaluation_1000_s": round(evaluation, 2),
        "transform_drawn_s": round(transform, 2),
        "evaluation_over_transform": round(evaluation / transform, 2),
    }


def _write_memmap(path: str, n_samples: int) -> None:
    """Random uint8 images (n, 3, 84, 84) in a .npy file, 1,000 at a time."""
    shape = (n_samples, 3, 84, 84)
    writer = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    rng = np.random.default_rng(0)
    for start in range(0, n_samples, 1000):
        stop = min(start + 1000, n_samples)
        writer[start:stop] = rng.integers(0, 256, (stop - start, *shape[1:]))
    writer.flush()


def _memmap_case(n_samples: int) -> dict:
    """Fit on a uint8 memmap of 3 x 84 x 84 images; peak memory.

    The file is written by another process, so that this one's peak is the
    fit's. Pages of the file that fit reads count in the resident memory.
    """
    import torch

    from sklearn_meta import MetaMetricClassifier

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "images.npy")
        command = [sys.executable, __file__, "--case", "write_memmap", path]
        subprocess.run([*command, str(n_samples)], check=True)
        X = np.load(path, mmap_mode="r")
        y = np.arange(n_samples) % (n_samples // 20)
        before = _peak_mb()
        start = time.perf_counter()
        with _PeakAnonymous() as anonymous:
            MetaMetricClassifier(
                backbone="conv4_strided",
                max_epochs=1,
                episodes_per_epoch=20,
                random_state=0,
                device="cpu",
            ).fit(X, y)
        return {
            "peak_anonymous_mb": round(anonymous.peak_mb),
            "shape": list(X.shape),
            "data_mb": round(X.nbytes / 2**20),
            "fit_s": round(time.perf_counter() - start, 1),
            "peak_before_fit_mb": round(before),
            "peak_mb": round(_peak_mb()),
        }


def _in_fresh_process(case: str, *args) -> dict:
    command = [sys.executable, __file__, "--case", case, *map(str, args)]
    output = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, *values = args.case
        cases = {
            "fit": lambda: _fit_case(values[0], int(values[1]), int(values[2])),
            "throughput": lambda: _throughput_case(int(values[0]), 3),
            "chunks": _chunk_case,
            "evaluation": lambda: _evaluation_case(int(values[0])),
            "memmap": lambda: _memmap_case(int(values[0])),
            "write_memmap": lambda: _write_memmap(values[0], int(values[1])),
        }
        result = cases[name]()
        if result is not None:
            print(json.dumps(result))
        return
    images = (5_000,) if args.quick else (5_000, 20_000, 80_000)
    rows = (5_000,) if args.quick else (5_000, 80_000, 320_000)
    # The training loop is not what this measures: --quick shortens it.
    episodes = 10 if args.quick else 100
    result = {
        "threads": THREADS,
        "fit": [_in_fresh_process("fit", "images", n, episodes) for n in images]
        + [_in_fresh_process("fit", "rows", n, episodes) for n in rows],
        "transform": _in_fresh_process("throughput", 2_000 if args.quick else 10_000),
        "chunks": _in_fresh_process("chunks"),
        "evaluation": [
            _in_fresh_process("evaluation", n)
            for n in ((2_000,) if args.quick else (2_000, 20_000))
        ],
        "memmap": _in_fresh_process("memmap", 3_000 if args.quick else 30_000),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
