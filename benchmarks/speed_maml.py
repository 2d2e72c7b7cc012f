"""Speed and memory of the MAML core against a per-task plain-autograd loop.

The reference is learn2learn's algorithm written out in plain PyTorch: for
every task of the meta-batch, inner steps with
``torch.autograd.grad(create_graph=True)`` on a copy of the parameters, then
the task's query loss back-propagated (gradients accumulate task by task),
then one Adam step. Its ANIL is learn2learn's ANIL example: the body's
features once per task, the head adapted with MAML. Ours is
:class:`sklearn_meta.nn.maml.MAML` as the estimator's skorch net uses it:
``MAML.meta_backward`` with the executor the estimator uses
(:class:`sklearn_meta.nn.executors.AutoExecutor`: on a CPU the tasks side by
side on torch's threads, each back-propagated on its own; on CUDA the
meta-batch vectorised), Adam step. ``--compare-kernels`` adds a third
contender, ours with Conv4's fused kernels switched off, alternated with the
other two; its speed-up against the reference (``unfused_speedup``) and ours
against it (``kernels_speedup``) are medians of per-repeat ratios like
``speedup``.

Setting: a body on random 28x28 grey images, 5-way 1-shot, 15 queries per
class: Conv4 (max-pool, or stride-2 with ``--downsample stride``; 64
channels), or with ``--body user`` a user's own ``nn.Module`` (four blocks
of 3x3 stride-2 convolution, torch's ``nn.BatchNorm2d`` with running
statistics, ReLU). For every configuration the contenders start
from the same weights; after a run on one task (kernel set-up), their first
meta-iteration compares the meta-gradients (and a float64 run on two tasks
checks that they are equal) and measures the peak memory, then they
alternate
``--repeats`` timed iterations, so a change of machine load hits both. Times
are medians; speed-ups are medians of the per-repeat ratios. Process CPU
time is reported beside wall time: on a machine shared with other work it is
the steadier of the two (with one thread, ``--threads 1``, it is the work
done).

Peak memory: on CUDA, ``max_memory_allocated`` over the iteration. On a CPU
(Linux; elsewhere no figure), each contender's first iteration runs again in
a fresh process of its own, where the peak resident set size over the
iteration (``VmHWM`` reset through ``/proc/self/clear_refs``) minus the
resident size before it is read. That process has glibc hand every
allocation above 64 KiB to ``mmap`` and trim freed heap at once, so resident
memory follows the tensors alive rather than what the allocator keeps
cached (in one shared process, the two contenders' figures moved by a
factor of two from run to run with the allocator's caches and per-thread
arenas).

Prints one JSON line on stdout (progress, one line per configuration, on
stderr). Examples::

    python benchmarks/speed_maml.py --quick
    python benchmarks/speed_maml.py --batch-sizes 16 --inner-steps 1 5
    python benchmarks/speed_maml.py --device cuda
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn_meta.nn.backbones import Conv4  # noqa: E402
from sklearn_meta.nn.executors import AutoExecutor  # noqa: E402
from sklearn_meta.nn.maml import MAML  # noqa: E402

N_WAY, K_SHOT, N_QUERY = 5, 1, 15
INNER_LR = 0.4


def make_batch(meta_batch: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    support_x = torch.randn(meta_batch, N_WAY * K_SHOT, 1, 28, 28, generator=generator)
    query_x = torch.randn(meta_batch, N_WAY * N_QUERY, 1, 28, 28, generator=generator)
    support_y = torch.arange(N_WAY).repeat_interleave(K_SHOT).repeat(meta_batch, 1)
    query_y = torch.arange(N_WAY).repeat_interleave(N_QUERY).repeat(meta_batch, 1)
    return tuple(t.to(device) for t in (support_x, support_y, query_x, query_y))


class UserConvNet(torch.nn.Module):
    """A user's network: learn2learn's stride-2 Conv4 written with torch.nn."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        layers, width = [], 1
        for _ in range(4):
            layers += [
                torch.nn.Conv2d(width, channels, 3, stride=2, padding=1),
                torch.nn.BatchNorm2d(channels),
                torch.nn.ReLU(),
            ]
            width = channels
        self.layers = torch.nn.Sequential(*layers, torch.nn.Flatten())
        self.out_features = channels * 2 * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def make_model(config: dict, device: torch.device, fused: bool = True) -> MAML:
    torch.manual_seed(0)
    if config["body"] == "user":
        body = UserConvNet()
    else:
        body = Conv4((1, 28, 28), hidden_channels=64, downsample=config["downsample"])
        body.fused = fused
    model = MAML(
        body,
        inner_lr=INNER_LR,
        inner_steps=config["inner_steps"],
        first_order=config["order"] == "first",
        inner_params=config["inner_params"],
        executor=AutoExecutor(body),
    )
    return model.to(device)


def _episode_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def our_gradients(model: MAML, batch) -> None:
    """The estimator's training step: :meth:`MAML.meta_backward`."""
    support_x, support_y, query_x, query_y = batch
    model.meta_backward(support_x, support_y, query_x, query_y, _episode_loss)


def reference_gradients(model: MAML, batch) -> None:
    """learn2learn's loop: a differentiable copy of the parameters per task."""
    support_x, support_y, query_x, query_y = batch
    n_tasks = support_x.shape[0]
    head_only = model.inner_params == "head"
    body_names = [name for name, _ in model.body.named_parameters()]
    for t in range(n_tasks):
        params = {f"body.{n}": p for n, p in model.body.named_parameters()}
        params["head.weight"] = model.head.weight.expand(N_WAY, -1)
        params["head.bias"] = model.head.bias.expand(N_WAY)

        def embed(p, x):
            body = {name: p[f"body.{name}"] for name in body_names}
            return functional_call(model.body, body, (x,))

        def head(p, features):
            return features @ p["head.weight"].T + p["head.bias"]

        if head_only:
            support_features = embed(params, support_x[t])
            query_features = embed(params, query_x[t])
        names = model.adapted_names
        for _ in range(model.inner_steps):
            if head_only:
                output = head(params, support_features)
            else:
                output = head(params, embed(params, support_x[t]))
            loss = F.cross_entropy(output, support_y[t])
            grads = torch.autograd.grad(
                loss, [params[n] for n in names], create_graph=not model.first_order
            )
            params = dict(params)
            for name, grad in zip(names, grads, strict=True):
                params[name] = params[name] - model.inner_lr * grad
        if not head_only:
            query_features = embed(params, query_x[t])
        query_loss = F.cross_entropy(head(params, query_features), query_y[t])
        (query_loss / n_tasks).backward()


GRADIENTS = {
    "ours": our_gradients,
    "ours_unfused": our_gradients,
    "reference": reference_gradients,
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _start_peak(device: torch.device) -> int | None:
    """Begin a peak-memory window; returns the baseline (bytes or KiB)."""
    _release_freed_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        # Resets VmHWM to the current resident size (Linux >= 4.0).
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return None
    return _proc_status_kib("VmRSS")


def _peak_mib(device: torch.device, baseline: int | None) -> float | None:
    if baseline is None:
        return None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    peak = _proc_status_kib("VmHWM")
    return None if peak is None else (peak - baseline) / 1024


def _model_for(name: str, config: dict, device: torch.device) -> MAML:
    return make_model(config, device, fused=name != "ours_unfused")


def _measure_peak_in_child(name: str, config: dict) -> float | None:
    """Peak MiB of one meta-iteration of ``name``, in a fresh process."""
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        name,
        "--child-config",
        json.dumps(config),
        "--threads",
        str(torch.get_num_threads()),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figure = json.loads(result.stdout.strip().splitlines()[-1])
    return figure["peak_mib"]


def _memory_child(args) -> None:
    """Entry of the child process of :func:`_measure_peak_in_child`."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers
        libc.mallopt(m_mmap_threshold, 64 * 1024)
        libc.mallopt(m_trim_threshold, 64 * 1024)
    except (OSError, AttributeError):
        print(json.dumps({"peak_mib": None}))
        return
    config = json.loads(args.child_config)
    device = torch.device("cpu")
    batch = make_batch(config["meta_batch"], device)
    model = _model_for(args.memory_child, config, device)
    gradients = GRADIENTS[args.memory_child]
    # One task first, as in the timed process, so set-up costs are not counted.
    gradients(model, tuple(t[:1] for t in batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.zero_grad()
    baseline = _start_peak(device)
    gradients(model, batch)
    optimizer.step()
    print(json.dumps({"peak_mib": _peak_mib(device, baseline)}))


def _relative_difference(ours: list, reference: list) -> float:
    difference = max(
        (a - b).abs().max().item() for a, b in zip(ours, reference, strict=True)
    )
    return difference / max(g.abs().max().item() for g in reference)


def gradient_check_float64(config, device, names, batch) -> float:
    """The largest relative difference of our meta-gradients from the
    reference's, on two tasks in float64.

    In float32 the two differ by rounding, and inner loops amplify rounding
    (with 5 inner steps at this inner_lr the float32 reference itself is
    about 1e-2 away from its float64 result), so equality is checked here.
    """
    small = tuple(t[:2].double() if t.is_floating_point() else t[:2] for t in batch)
    grads = {}
    for name in names:
        model = _model_for(name, config, device).double()
        GRADIENTS[name](model, small)
        grads[name] = [p.grad for p in model.parameters()]
    return max(
        _relative_difference(grads[name], grads["reference"])
        for name in names
        if name != "reference"
    )


def run_config(config: dict, device: torch.device, repeats: int, names: list[str]):
    batch = make_batch(config["meta_batch"], device)
    models = {name: _model_for(name, config, device) for name in names}
    optimizers = {
        name: torch.optim.Adam(model.parameters(), lr=1e-3)
        for name, model in models.items()
    }
    row: dict = {}
    # One task first, so that one-time costs (kernel set-up, caches) land
    # in neither the memory figure nor the timings.
    single = tuple(t[:1] for t in batch)
    for name, model in models.items():
        GRADIENTS[name](model, single)
    for name in names:
        if device.type == "cuda":
            optimizers[name].zero_grad()
            baseline = _start_peak(device)
            GRADIENTS[name](models[name], batch)
            optimizers[name].step()
            row[f"{name}_peak_mib"] = _peak_mib(device, baseline)
        else:
            row[f"{name}_peak_mib"] = _measure_peak_in_child(name, config)
    row["max_relative_grad_diff_float64"] = gradient_check_float64(
        config, device, names, batch
    )
    if row["ours_peak_mib"] is not None and row["reference_peak_mib"]:
        row["memory_ratio"] = row["ours_peak_mib"] / row["reference_peak_mib"]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, model in models.items():
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            optimizers[name].zero_grad()
            GRADIENTS[name](model, batch)
            optimizers[name].step()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    for label, times in (("", wall), ("cpu_", cpu)):
        for name in names:
            row[f"{name}_{label}s"] = statistics.median(times[name])
        ratios = [r / o for r, o in zip(times["reference"], times["ours"], strict=True)]
        row[f"{label}speedup"] = statistics.median(ratios)
        if "ours_unfused" in names:
            ratios = [
                u / o for u, o in zip(times["ours_unfused"], times["ours"], strict=True)
            ]
            row[f"{label}kernels_speedup"] = statistics.median(ratios)
            ratios = [
                r / u
                for r, u in zip(times["reference"], times["ours_unfused"], strict=True)
            ]
            row[f"{label}unfused_speedup"] = statistics.median(ratios)
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--quick", action="store_true", help="meta-batch 4 and 16, one inner step"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--inner-steps", type=int, nargs="+", default=None)
    parser.add_argument(
        "--orders", nargs="+", default=["second", "first"], choices=["second", "first"]
    )
    parser.add_argument("--no-anil", action="store_true", help="skip ANIL")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed iterations per contender and configuration (median)",
    )
    parser.add_argument(
        "--body",
        default="conv4",
        choices=["conv4", "user"],
        help="Conv4, or a user's nn.Module with nn.BatchNorm2d",
    )
    parser.add_argument(
        "--downsample",
        default="max_pool",
        choices=["max_pool", "stride"],
        help="Conv4 layout: max-pooling, or stride-2 convolutions (learn2learn's)",
    )
    parser.add_argument(
        "--compare-kernels",
        action="store_true",
        help="also time ours with Conv4's fused kernels switched off",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--memory-child", choices=list(GRADIENTS), help=argparse.SUPPRESS
    )
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args)
        return
    device = torch.device(args.device)
    batch_sizes = args.batch_sizes or ([4, 16] if args.quick else [4, 16, 32])
    inner_steps = args.inner_steps or ([1] if args.quick else [1, 5])
    names = ["ours", "reference"]
    if args.compare_kernels:
        names.insert(1, "ours_unfused")
    configs = []
    for meta_batch in batch_sizes:
        for steps in inner_steps:
            for order in args.orders:
                configs.append((meta_batch, steps, order, "all"))
            if not args.no_anil:
                configs.append((meta_batch, steps, "second", "head"))
    results = []
    started = time.perf_counter()
    for meta_batch, steps, order, inner_params in configs:
        config = {
            "meta_batch": meta_batch,
            "inner_steps": steps,
            "order": order,
            "inner_params": inner_params,
            "body": args.body,
            "downsample": args.downsample,
        }
        row = {**config, **run_config(config, device, args.repeats, names)}
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    summary = {
        "benchmark": "speed_maml",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "setting": f"{args.body} {args.downsample} 64ch, 28x28, 5-way 1-shot, "
        "15 queries",
        "repeats": args.repeats,
        "total_s": time.perf_counter() - started,
        "results": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
