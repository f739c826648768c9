"""Decoder-side savings on CPU: what channels-last memory, ``torch.compile`` and bf16 autocast buy.

(channels-last, ``channels_last="auto"``, is the conv decoder's CPU default since session 12.)

A QLVM training step decodes all m lattice points forward and backward, whatever the batch
size (the cost model of docs/method.md), so a faster decoder pass is a faster epoch. This
times one decoder pass, forward and backward, of the README job's decoder (the conv decoder
of a 128 x 128 spectrogram with a Gaussian likelihood's two outputs per pixel, upsampled x2)
on m lattice points, for each option, after warm-up, and reports the largest deviation of its
output from the plain float32 pass (an option "keeps quality" only when that is small).

Usage::

    python benchmarks/bench_decoder_options.py --m 377 --repeats 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def build(seed: int = 0, **options):
    from vocalatent.nn.decoders import ConvDecoder

    torch.manual_seed(seed)
    return ConvDecoder(2, (128, 128), n_params=2, **options)


def step_seconds(fn, z, repeats: int) -> float:
    """Median seconds of ``fn(z).sum().backward()`` over ``repeats`` runs (after 2 warm-ups)."""
    times = []
    for i in range(repeats + 2):
        z1 = z.clone().requires_grad_(False)
        t0 = time.perf_counter()
        out = fn(z1)
        out.float().sum().backward()
        dt = time.perf_counter() - t0
        if i >= 2:
            times.append(dt)
    times.sort()
    return times[len(times) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=377, help="lattice points per pass (the job's CPU m)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vocalatent.lattice import lattice

    z = torch.as_tensor(lattice(args.m, 2), dtype=torch.float32)
    base = build(channels_last=False)
    with torch.no_grad():
        ref = base(z)
    rows = []

    def record(name, fn, extra=None):
        with torch.no_grad():
            out = fn(z).float()
        dev = float((out - ref).abs().max() / ref.abs().max())
        s = step_seconds(fn, z, args.repeats)
        rows.append({"option": name, "seconds": s, "max_rel_deviation": dev, **(extra or {})})
        print(f"{name:56s} {1000 * s:8.1f} ms per pass (forward + backward, m = {args.m})  "
              f"max deviation {dev:.1e} of the output range" + (f"  {extra}" if extra else ""), flush=True)

    record("float32, NCHW (channels_last=False)", base)
    record("float32, channels-last (channels_last='auto', the default)", build(channels_last="auto"))

    def bf16(zz):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return base(zz)

    record("bf16 autocast (CPU), NCHW", bf16)
    try:
        compiled = torch.compile(build(channels_last=False))
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(z)
        compiled(z).sum().backward()
        record("torch.compile (inductor), NCHW", compiled, {"compile_seconds": round(time.perf_counter() - t0, 1)})
    except Exception as exc:        # no compiler toolchain, unsupported op: say so
        rows.append({"option": "torch.compile (inductor)", "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(f"torch.compile failed: {type(exc).__name__}: {exc}"[:300])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"m": args.m, "threads": args.threads, "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
