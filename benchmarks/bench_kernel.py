"""Benchmark the B x m likelihood kernels of vocalatent.nn.likelihoods against per-pair code.

Three measurements (see docs/bench_engine.md for recorded figures):

1. Speed: the Gaussian kernel ``Gaussian.log_prob_matrix`` at B=64, m=610, D=4096 against a
   per-pair reference that materializes the B x m x D tensor
   ``((x[:, None, :] - mu[None]) ** 2 * inv_var).sum(-1)``. The issue asks for >= 100x.
2. A full training step of the Gaussian likelihood (forward, logsumexp over the lattice, and
   backward with respect to the decoded means and the per-feature variances) at B=256, m=610,
   D=16384: its time against the three bare matrix products it is made of (forward
   ``x @ mu.T``; backward ``g.T @ x`` and ``g @ mu``), and its peak memory beyond its inputs
   (CPU: the peak resident set size of a fresh subprocess, before and after one step; CUDA:
   ``torch.cuda.max_memory_allocated``). The issue asks for <= 2x the GEMMs and < 1 GB.
3. The Bernoulli, Poisson, Poisson-with-offset and multinomial kernels at B=64, m=610, D=4096:
   forward time, forward + backward time, per-pair reference time, and agreement.

Usage::

    python benchmarks/bench_kernel.py                 # CPU
    python benchmarks/bench_kernel.py --device cuda   # a GPU
    python benchmarks/bench_kernel.py --json out/kernel.json

The functions are importable (``benchmarks/gpu_bench.py`` reuses them); they need only torch
and ``vocalatent.nn.likelihoods``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vocalatent.nn.likelihoods import Bernoulli, Gaussian, Multinomial, Poisson

logger = logging.getLogger("bench_kernel")

GIB = 2**30


# ------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, *, repeats: int = 5, warmup: int = 1) -> float:
    """Best (minimum) wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup``.

    The minimum, not the median: on a machine shared with other jobs the extra time of the
    slower runs is other people's load, not the code's cost.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


# ------------------------------------------------------------------------------------ inputs
def gaussian_inputs(B: int, m: int, D: int, device, *, seed: int = 0):
    """Data in [0, 1], decoded means near the data, and a feature-variance Gaussian likelihood.

    Returns
    -------
    x : torch.Tensor [shape=(B, D)]
    params : torch.Tensor [shape=(m, 1, D)], a leaf that requires grad (the decoded means)
    like : Gaussian, its per-feature variance a parameter that requires grad
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(B, D, generator=g)
    mu = (0.5 + 0.2 * torch.randn(m, 1, D, generator=g)).clamp(0, 1)
    like = Gaussian(D, variance="feature")
    like.setup(x.numpy())
    like.to(device)
    return x.to(device), mu.to(device).requires_grad_(True), like


def count_inputs(kind: str, B: int, m: int, D: int, device, *, seed: int = 0):
    """Inputs for the Bernoulli / Poisson / multinomial kernels: ``(x, params, likelihood)``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    raw = 0.5 * torch.randn(m, 1, D, generator=g)
    if kind == "bernoulli":
        x, like = (torch.rand(B, D, generator=g) < 0.3).float(), Bernoulli()
    elif kind == "poisson":
        x, like = torch.poisson(torch.full((B, D), 1.5), generator=g), Poisson()
        raw = raw + math.log(1.5)
    elif kind == "poisson_offset":
        x, like = torch.poisson(torch.full((B, D), 1.5), generator=g), Poisson(offset=True)
    elif kind == "multinomial":
        x, like = torch.poisson(torch.full((B, D), 1.5), generator=g), Multinomial()
    else:
        raise ValueError(f"unknown kernel {kind!r}")
    like.to(device)
    return x.to(device), raw.to(device).requires_grad_(True), like


# ------------------------------------------------------------------------------------ per-pair references
def per_pair_reference(kind: str, x: torch.Tensor, params: torch.Tensor, like) -> torch.Tensor:
    """The (B, m) log-likelihood matrix computed the direct way, through a (B, m, D) tensor."""
    p = params[:, 0]
    if kind == "gaussian":
        log_s = like._log_sigma(params)
        inv_var = torch.exp(-2 * log_s)
        quad = ((x[:, None, :] - p[None]) ** 2 * inv_var).sum(-1)
        return -0.5 * quad - log_s.sum() - 0.5 * x.shape[1] * math.log(2 * math.pi)
    if kind == "bernoulli":
        return (x[:, None, :] * p[None] - F.softplus(p)[None]).sum(-1)
    lgx = torch.lgamma(x + 1)
    if kind == "poisson":
        return (x[:, None, :] * p[None] - torch.exp(p)[None] - lgx[:, None, :]).sum(-1)
    if kind == "poisson_offset":
        total = x.sum(1, keepdim=True)
        log_rate = torch.log(total.clamp_min(1e-12))[:, :, None] + F.log_softmax(p, 1)[None]
        return (x[:, None, :] * log_rate - torch.exp(log_rate) - lgx[:, None, :]).sum(-1)
    if kind == "multinomial":
        total = x.sum(1)
        return ((x[:, None, :] * F.log_softmax(p, 1)[None]).sum(-1)
                + (torch.lgamma(total + 1) - lgx.sum(1))[:, None])
    raise ValueError(f"unknown kernel {kind!r}")


def _step(like, x, params):
    """One training step of the likelihood alone: -mean_i logsumexp_j ll_ij, then backward."""
    ll = like.log_prob_matrix(x, params)
    loss = -(torch.logsumexp(ll, dim=1) - math.log(params.shape[0])).mean()
    loss.backward()
    return loss


# ------------------------------------------------------------------------------------ 1. speed vs per-pair
def bench_speed(device, *, B=64, m=610, D=4096, repeats=5) -> dict:
    """Gaussian kernel (forward) vs the per-pair reference; also their agreement."""
    x, params, like = gaussian_inputs(B, m, D, device)
    with torch.no_grad():
        t_kernel = timeit(lambda: like.log_prob_matrix(x, params), device, repeats=max(repeats, 10))
        t_ref = timeit(lambda: per_pair_reference("gaussian", x, params, like), device,
                       repeats=max(2, repeats // 2))
        got = like.log_prob_matrix(x, params).double()
        ref = per_pair_reference("gaussian", x.double(), params.double(), copy.deepcopy(like).double())
    err = float(((got - ref).abs() / ref.abs().clamp_min(1.0)).max())
    return {"B": B, "m": m, "D": D, "kernel_s": t_kernel, "per_pair_s": t_ref,
            "speedup": t_ref / t_kernel, "max_rel_err_vs_float64": err}


# ------------------------------------------------------------------------------------ 2. training step
def bench_step_time(device, *, B=256, m=610, D=16384, repeats=5) -> dict:
    """Time of forward + backward of the Gaussian likelihood against its bare GEMMs."""
    x, params, like = gaussian_inputs(B, m, D, device)

    def step():
        params.grad = None
        like.raw_sigma.grad = None
        _step(like, x, params)

    t_step = timeit(step, device, repeats=repeats)
    mu = params.detach()[:, 0].contiguous()
    g = torch.randn(B, m, device=device)
    t_fwd = timeit(lambda: x @ mu.T, device, repeats=repeats)
    t_dmu = timeit(lambda: g.T @ x, device, repeats=repeats)
    t_dx = timeit(lambda: g @ mu, device, repeats=repeats)
    gemm = t_fwd + t_dmu + t_dx
    flops = 3 * 2 * B * m * D
    return {"B": B, "m": m, "D": D, "step_s": t_step, "gemm_fwd_s": t_fwd, "gemm_dmu_s": t_dmu,
            "gemm_dx_s": t_dx, "gemms_s": gemm, "step_over_gemms": t_step / gemm,
            "gemm_gflops": flops / gemm / 1e9}


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def step_peak_memory(device, *, B=256, m=610, D=16384) -> dict:
    """Peak memory of one Gaussian training step beyond its inputs, measured in this process.

    On CUDA: ``max_memory_allocated`` during the step minus what was allocated before it. On
    CPU (Linux): the peak resident set size during the step (``VmHWM``, reset just before it
    through ``/proc/self/clear_refs``) minus the resident set size before it; call it in a
    fresh process (:func:`step_peak_memory_subprocess`). Either way it counts every allocation
    made by the step, the gradients of the means and variances included, and one-time
    allocations of a first step (thread pools), so it is an upper bound.
    """
    x, params, like = gaussian_inputs(B, m, D, device)
    input_bytes = (x.numel() + params.numel() + like.raw_sigma.numel() + like.center.numel()) * 4
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _step(like, x, params)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        method = "torch.cuda.max_memory_allocated"
    elif _reset_peak_rss() and _proc_status_bytes("VmRSS") is not None:
        before = _proc_status_bytes("VmRSS")
        _step(like, x, params)
        peak = _proc_status_bytes("VmHWM") - before
        method = "peak RSS (VmHWM, reset before the step) minus RSS before it, fresh process"
    else:
        before = _maxrss_bytes()
        _step(like, x, params)
        peak = _maxrss_bytes() - before
        method = "ru_maxrss growth in a fresh process (may under-count)"
    bmd = B * m * D * 4
    return {"B": B, "m": m, "D": D, "input_bytes": input_bytes, "peak_beyond_inputs_bytes": int(peak),
            "peak_beyond_inputs_gib": peak / GIB, "bxmxd_float32_gib": bmd / GIB, "method": method}


def step_peak_memory_subprocess(*, B=256, m=610, D=16384) -> dict:
    """Run :func:`step_peak_memory` on CPU in a fresh Python process and return its result."""
    code = (f"import json, torch, bench_kernel as bk; torch.set_num_threads({torch.get_num_threads()}); "
            f"print(json.dumps(bk.step_peak_memory(torch.device('cpu'), B={B}, m={m}, D={D})))")
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ 3. other kernels
def bench_other_kernels(device, *, B=64, m=610, D=4096, repeats=5,
                        kinds=("bernoulli", "poisson", "poisson_offset", "multinomial")) -> list[dict]:
    """Forward, forward + backward and per-pair times, and agreement, for the count kernels."""
    rows = []
    for kind in kinds:
        x, params, like = count_inputs(kind, B, m, D, device)
        with torch.no_grad():
            t_fwd = timeit(lambda: like.log_prob_matrix(x, params), device, repeats=max(repeats, 10))
            t_ref = timeit(lambda: per_pair_reference(kind, x, params, like), device,
                           repeats=max(2, repeats // 2))
            got = like.log_prob_matrix(x, params).double()
            ref = per_pair_reference(kind, x.double(), params.double(), like).double()

        def step():
            params.grad = None
            _step(like, x, params)

        t_step = timeit(step, device, repeats=repeats)
        p = params.detach()[:, 0].contiguous()
        t_gemm = timeit(lambda: x @ p.T, device, repeats=max(repeats, 10))
        err = float(((got - ref).abs() / ref.abs().clamp_min(1.0)).max())
        rows.append({"kernel": kind, "B": B, "m": m, "D": D, "forward_s": t_fwd, "step_s": t_step,
                     "gemm_s": t_gemm, "per_pair_s": t_ref, "speedup": t_ref / t_fwd,
                     "max_rel_err_vs_float64": err})
    return rows


# ------------------------------------------------------------------------------------ driver
def run_all(device: torch.device, *, repeats: int = 5, quick: bool = False) -> dict:
    """All three measurements; ``quick`` shrinks the sizes (for smoke tests only)."""
    if quick:
        s1, s2, s3 = dict(B=16, m=89, D=512), dict(B=32, m=89, D=1024), dict(B=16, m=89, D=512)
    else:
        s1, s2, s3 = dict(B=64, m=610, D=4096), dict(B=256, m=610, D=16384), dict(B=64, m=610, D=4096)
    logger.info("speed: Gaussian kernel vs per-pair reference %s", s1)
    speed = bench_speed(device, repeats=repeats, **s1)
    logger.info("training step vs bare GEMMs %s", s2)
    step = bench_step_time(device, repeats=repeats, **s2)
    logger.info("peak memory of one training step %s", s2)
    mem = step_peak_memory(device, **s2) if device.type == "cuda" else step_peak_memory_subprocess(**s2)
    logger.info("other kernels %s", s3)
    others = bench_other_kernels(device, repeats=repeats, **s3)
    return {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "speed": speed, "step": step, "memory": mem,
            "other_kernels": others}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def format_report(res: dict) -> str:
    """The results as a plain-text table."""
    s, st, mem = res["speed"], res["step"], res["memory"]
    ms = lambda t: f"{1e3 * t:9.2f}"  # noqa: E731
    lines = [
        f"device: {res['device']} ({res['device_name']}), torch {res['torch']}, {res['threads']} threads",
        "",
        f"1. Gaussian kernel vs per-pair (B x m x D) reference, B={s['B']} m={s['m']} D={s['D']}",
        f"   kernel {ms(s['kernel_s'])} ms   per-pair {ms(s['per_pair_s'])} ms   "
        f"speedup {s['speedup']:.0f}x (target >= 100x)   max rel err vs float64 {s['max_rel_err_vs_float64']:.1e}",
        "",
        f"2. Gaussian training step (forward + backward wrt means and variances), "
        f"B={st['B']} m={st['m']} D={st['D']}",
        f"   step {ms(st['step_s'])} ms   GEMMs: x@mu.T {ms(st['gemm_fwd_s'])} + g.T@x "
        f"{ms(st['gemm_dmu_s'])} + g@mu {ms(st['gemm_dx_s'])} = {ms(st['gemms_s'])} ms "
        f"({st['gemm_gflops']:.0f} GFLOP/s)",
        f"   step / GEMMs = {st['step_over_gemms']:.2f} (target <= 2)",
        f"   peak memory beyond inputs {mem['peak_beyond_inputs_gib'] * 1024:.0f} MiB (target < 1024 MiB; "
        f"inputs {mem['input_bytes'] / 2**20:.0f} MiB; a B x m x D float32 tensor would be "
        f"{mem['bxmxd_float32_gib']:.1f} GiB) [{mem['method']}]",
        "",
        f"3. other kernels, B={res['other_kernels'][0]['B']} m={res['other_kernels'][0]['m']} "
        f"D={res['other_kernels'][0]['D']}",
        f"   {'kernel':<15}{'fwd ms':>9}{'GEMM ms':>9}{'fwd+bwd ms':>11}{'per-pair ms':>12}"
        f"{'speedup':>9}{'rel err':>10}",
    ]
    for r in res["other_kernels"]:
        lines.append(f"   {r['kernel']:<15}{ms(r['forward_s'])}{ms(r['gemm_s'])}{ms(r['step_s']):>11}"
                     f"{ms(r['per_pair_s']):>12}{r['speedup']:>8.0f}x{r['max_rel_err_vs_float64']:>10.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the best is reported)")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test, not a benchmark)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's). On a machine shared with other "
                             "jobs, 1 thread avoids threads waiting for each other at every operation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for, but CUDA is not available here")
    res = run_all(device, repeats=args.repeats, quick=args.quick)
    print(format_report(res))
    if args.json is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from vocalatent._utils import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
