"""Meta-iterations per second: one process against several under torchrun.

Setting: Conv4 on 28x28 procedural glyphs (``make_glyph_tasks``), 5-way
1-shot with 15 queries per class, ``--episodes`` episodes per outer step in
all. On a CPU: one process with 2 threads and ``meta_batch_size=episodes``
against 2 processes (``torchrun --nproc_per_node=2``, gloo) with 1 thread
each and ``meta_batch_size=episodes/2`` and ``distributed=True``: the same
episodes per outer step, the same cores. On CUDA (``--device cuda``): one
GPU against ``--gpus`` GPUs (nccl, one process per GPU), each process with
``meta_batch_size=episodes/gpus``.

For second-order MAML and the metric classifier, the two configurations
alternate ``--repeats`` times (so a change of machine load hits both); each
run times its outer steps after the first (set-up) in the training process
itself, so process start-up and imports are not counted. Rates are medians,
the speed-up the median of the per-repeat ratios. Peak memory per process:
the peak resident set size (``ru_maxrss``, CPU) or ``max_memory_allocated``
(CUDA) of each training process, the largest over its processes.

Prints one JSON line on stdout. Examples::

    python benchmarks/distributed.py --quick
    python benchmarks/distributed.py --device cuda --gpus 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _train(args) -> None:
    """One training process: fit, time the outer steps, write the figures."""
    import torch
    from skorch.callbacks import Callback

    from sklearn_meta import MAMLFeatureExtractor, MetaMetricClassifier
    from sklearn_meta.datasets import make_glyph_tasks

    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", 1))
    X, y = make_glyph_tasks(n_classes=50, n_per_class=20, random_state=0)

    class StepTimes(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                if args.device == "cuda":
                    torch.cuda.synchronize()
                net.history.record_batch("finished_at", time.perf_counter())

    common = dict(
        n_way=5,
        k_shot=1,
        n_query=15,
        meta_batch_size=args.episodes // world,
        episodes_per_epoch=args.episodes * (args.steps + 1),
        max_epochs=1,
        meta_lr_schedule="constant",
        device=args.device,
        distributed="RANK" in os.environ,
        callbacks=[StepTimes()],
        random_state=0,
    )
    estimator = {
        "maml": lambda: MAMLFeatureExtractor(inner_lr=0.4, backbone="conv4", **common),
        "metric": lambda: MetaMetricClassifier(backbone="conv4", **common),
    }[args.estimator]()
    estimator.fit(X, y)
    times = estimator.history_[-1, "batches", :, "finished_at"]
    memory = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    rank = os.environ.get("RANK", "0")
    Path(args.out, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "per_second": (len(times) - 1) / (times[-1] - times[0]),
                "peak_mb": memory,
            }
        )
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(estimator: str, processes: int, threads: int, args) -> dict:
    """Launch one configuration; its rate (outer steps/s) and peak memory (MB).

    ``processes=None`` is one process without torchrun (``distributed=False``).
    """
    with tempfile.TemporaryDirectory() as out:
        worker = [
            __file__,
            "--train",
            "--estimator",
            estimator,
            "--threads",
            str(threads),
            "--episodes",
            str(args.episodes),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--out",
            out,
        ]
        launcher = [sys.executable]
        if processes is not None:
            launcher += [
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={processes}",
                "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}",
            ]
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": str(threads),
        }
        subprocess.run(launcher + worker, env=env, check=True, stdout=sys.stderr)
        ranks = [json.loads(p.read_text()) for p in Path(out).glob("rank*.json")]
    return {
        "per_second": min(r["per_second"] for r in ranks),
        "peak_mb": max(r["peak_mb"] for r in ranks),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpus", type=int, default=2, help="GPUs against one (cuda)")
    parser.add_argument("--episodes", type=int, default=8, help="per outer step, all")
    parser.add_argument("--steps", type=int, default=6, help="timed outer steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 repeats, 3 steps")
    parser.add_argument("--estimator", default="maml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train:
        _train(args)
        return
    if args.quick:
        args.repeats, args.steps = 2, 3
    if args.device == "cuda":
        single, several = (None, 1), (args.gpus, 1)
        names = ("1_gpu", f"{args.gpus}_gpus")
    else:
        single, several = (None, 2), (2, 1)
        names = ("1_process_x_2_threads", "2_processes_x_1_thread")
    figures = {
        "device": args.device,
        "episodes_per_step": args.episodes,
        "timed_steps": args.steps,
        "repeats": args.repeats,
    }
    for estimator in ("maml", "metric"):
        runs = {names[0]: [], names[1]: []}
        for _ in range(args.repeats):
            for name, (processes, threads) in zip(
                names, (single, several), strict=True
            ):
                runs[name].append(_run(estimator, processes, threads, args))
                print(estimator, name, runs[name][-1], file=sys.stderr)
        figures[estimator] = {
            **{
                name: {
                    "steps_per_second": statistics.median(r["per_second"] for r in rs),
                    "peak_mb_per_process": max(r["peak_mb"] for r in rs),
                }
                for name, rs in runs.items()
            },
            "speedup": statistics.median(
                b["per_second"] / a["per_second"]
                for a, b in zip(runs[names[0]], runs[names[1]], strict=True)
            ),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
