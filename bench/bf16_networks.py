"""The conv networks under bf16 autocast: forward + backward of an encoder and a decoder (batch 128), in
float32, in bf16 as the library runs them (nets/conv.py ``run_sequential``: input and parameters cast once,
every layer in bf16) and in bf16 as autocast runs the textbook ``nn.Sequential`` (a cast per operation).
Interleaved rounds in one process, process CPU time, medians of the per-round ratios.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bf16_networks.py [--rounds 9]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmvae.nets.conv import ConvDecoder, ConvEncoder, run_sequential

SHAPES = [(1, 28, 28), (3, 28, 28), (3, 32, 32)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=3, help="forward + backward passes per timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| image | library bf16 / float32 | autocast's textbook path bf16 / float32 | library bf16 / textbook bf16 |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        torch.manual_seed(0)
        dec, enc = ConvDecoder(shape, 20), ConvEncoder(shape, 20)
        z, x = torch.randn(128, 20), torch.rand(128, *shape)

        def step(bf16: bool, library: bool):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = dec(z) if library else dec.net(z)
                feats = run_sequential(enc.body, x) if library else enc.body(x)
            (out.float().square().mean() + feats.float().sum()).backward()

        ways = {"fp32": (False, True), "library bf16": (True, True), "textbook bf16": (True, False)}
        for way in ways.values():
            step(*way)
        times = {k: [] for k in ways}
        for r in range(args.rounds):
            order = list(ways) if r % 2 == 0 else list(reversed(ways))
            for k in order:
                t0 = time.process_time()
                for _ in range(args.steps):
                    step(*ways[k])
                times[k].append(time.process_time() - t0)

        def speed(a, b):   # how many times faster b is than a
            return statistics.median(x / y for x, y in zip(times[a], times[b]))

        print(f"| {'x'.join(map(str, shape))} | {speed('fp32', 'library bf16'):.2f} | "
              f"{speed('fp32', 'textbook bf16'):.2f} | {speed('textbook bf16', 'library bf16'):.2f} |", flush=True)


if __name__ == "__main__":
    main()
