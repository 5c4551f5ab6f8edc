"""Vectorised experts on CPU (issue 15, item 1): M identically shaped networks as one call, three ways,
against the per-modality loop.

* ``loop``     each network called on its own input (what ``vectorise=false`` does);
* ``vmap``     ``torch.stack`` of the M networks' parameters at call time + ``torch.func.vmap`` of
               ``functional_call`` (what ``vectorise=true`` does, nets/stacked.py);
* ``grouped``  the conv networks written by hand as grouped convolutions over M·C channels (first
               decoder layer one matrix product for all M; encoder's last layers ``baddbmm``), channels-last;
               the MLPs as ``baddbmm``: the best a stacked layout can do without vmap;
* ``stack``    the parameter stacking alone (its share of ``vmap``).
Forward + backward of M encoders on a batch each, and of M decoders all reading the same latents
(MMVAE / MoPoE decoders), batch 128, one thread, interleaved rounds, CPU time.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/stacked_speed.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import machine  # noqa: E402

from mmvae.nets.conv import ConvDecoder, ConvEncoder  # noqa: E402
from mmvae.nets.mlp import MLPDecoder, MLPEncoder  # noqa: E402
from mmvae.nets.stacked import stacked_call  # noqa: E402

LATENT, BATCH = 20, 128
CL = torch.channels_last


def grouped_conv_decoders(decs, z):
    """M ConvDecoders reading the same z: one matrix product, then grouped transposed convolutions."""
    m = len(decs)
    first = [d.net[1] for d in decs]
    w = torch.cat([f.weight.permute(0, 2, 3, 1).reshape(LATENT, -1) for f in first], 1)   # (D, M*16*C)
    b = torch.cat([f.bias.repeat(16) for f in first])
    c = first[0].weight.shape[1]
    h = torch.addmm(b, z, w).view(-1, m, 4, 4, c).permute(0, 1, 4, 2, 3).reshape(-1, m * c, 4, 4)
    h = h.contiguous(memory_format=CL).relu_()
    for i in (3, 5, 7):
        layer = decs[0].net[i]
        weight = torch.cat([d.net[i].weight for d in decs])
        bias = torch.cat([d.net[i].bias for d in decs])
        h = F.conv_transpose2d(h, weight, bias, layer.stride, layer.padding, groups=m)
        if i != 7:
            h = h.relu_()
    return h.contiguous().view(h.shape[0], m, -1, *h.shape[2:]).transpose(0, 1)


def grouped_conv_encoders(encs, xs):
    m = len(encs)
    h = torch.cat(list(xs), 1).contiguous(memory_format=CL)
    for i in (0, 2, 4):
        layer = encs[0].body[i]
        h = F.conv2d(h, torch.cat([e.body[i].weight for e in encs]), torch.cat([e.body[i].bias for e in encs]),
                     layer.stride, layer.padding, groups=m).relu_()
    h = h.contiguous().view(h.shape[0], m, -1).transpose(0, 1)                  # (M, B, C*4*4)
    w = torch.stack([e.body[6].weight.flatten(1).t() for e in encs])
    h = torch.baddbmm(torch.stack([e.body[6].bias for e in encs]).unsqueeze(1), h, w)
    w = torch.stack([e.head.weight.t() for e in encs])
    return torch.baddbmm(torch.stack([e.head.bias for e in encs]).unsqueeze(1), h, w).chunk(2, -1)


def grouped_mlp(nets, x, shared: bool):
    """Sequential Linear/SiLU stacks as baddbmm over the M networks."""
    seqs = [n.net if hasattr(n, "net") else n.body for n in nets]
    h = x.flatten(1).expand(len(nets), *x.flatten(1).shape) if shared else x.flatten(2)
    for i, layer in enumerate(seqs[0]):
        if isinstance(layer, torch.nn.Linear):
            w = torch.stack([s[i].weight.t() for s in seqs])
            h = torch.baddbmm(torch.stack([s[i].bias for s in seqs]).unsqueeze(1), h, w)
        else:
            h = F.silu(h)
    if not shared:   # encoders: activation and head
        h = F.silu(h)
        w = torch.stack([n.head.weight.t() for n in nets])
        h = torch.baddbmm(torch.stack([n.head.bias for n in nets]).unsqueeze(1), h, w)
    return h


def total(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        return sum(total(o) for o in out)
    return out.sum()


def cases(m: int):
    torch.manual_seed(0)
    z = torch.randn(BATCH, LATENT)
    xs = torch.rand(m, BATCH, 3, 28, 28)
    out = {}
    decs = [ConvDecoder((3, 28, 28), LATENT) for _ in range(m)]
    encs = [ConvEncoder((3, 28, 28), LATENT) for _ in range(m)]
    out[f"conv decoders x{m}"] = {
        "loop": lambda: [d(z) for d in decs],
        "vmap": lambda: stacked_call(decs, [z], [True]),
        "grouped": lambda: grouped_conv_decoders(decs, z),
        "stack": lambda: [torch.stack(ps) for ps in zip(*(d.parameters() for d in decs))]}
    out[f"conv encoders x{m}"] = {
        "loop": lambda: [e(x) for e, x in zip(encs, xs)],
        "vmap": lambda: stacked_call(encs, [xs], [False]),
        "grouped": lambda: grouped_conv_encoders(encs, xs),
        "stack": lambda: [torch.stack(ps) for ps in zip(*(e.parameters() for e in encs))]}
    mdecs = [MLPDecoder((3, 28, 28), LATENT, (512, 512)) for _ in range(m)]
    mencs = [MLPEncoder((3, 28, 28), LATENT, (512, 512)) for _ in range(m)]
    out[f"MLP decoders x{m}"] = {
        "loop": lambda: [d(z) for d in mdecs],
        "vmap": lambda: stacked_call(mdecs, [z], [True]),
        "grouped": lambda: grouped_mlp(mdecs, z, True),
        "stack": lambda: [torch.stack(ps) for ps in zip(*(d.parameters() for d in mdecs))]}
    out[f"MLP encoders x{m}"] = {
        "loop": lambda: [e(x) for e, x in zip(mencs, xs)],
        "vmap": lambda: stacked_call(mencs, [xs], [False]),
        "grouped": lambda: grouped_mlp(mencs, xs, False),
        "stack": lambda: [torch.stack(ps) for ps in zip(*(e.parameters() for e in mencs))]}
    return out


def forward_backward(fn):
    def run():
        total(fn()).backward()
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modalities", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default="docs/results/speed-vectorised.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0, load = time.time(), os.getloadavg()[0]
    rows = []
    for m in args.modalities:
        for name, impls in cases(m).items():
            runs = {k: forward_backward(f) for k, f in impls.items()}
            for f in runs.values():
                f()
            times = {k: [] for k in runs}
            keys = list(runs)
            for r in range(args.reps):
                for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                    c = time.process_time()
                    runs[k]()
                    times[k].append(time.process_time() - c)
            ratio = {k: statistics.median(a / b for a, b in zip(times["loop"], times[k])) for k in keys}
            rows.append(f"| {name} | {statistics.median(times['loop']) * 1e3:.0f} | {ratio['vmap']:.2f} | "
                        f"{ratio['grouped']:.2f} | {100 / ratio['stack']:.0f}% |")
            print(rows[-1], flush=True)
    table = "\n".join(["| networks (forward + backward, batch 128 each) | loop, ms | vmap / loop speed | "
                       "grouped / loop speed | stacking the parameters, % of the loop's time |",
                       "|---|---|---|---|---|"] + rows)
    print(table)
    if not args.out:
        return
    cmd = "python bench/stacked_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).write_text(f"""# Vectorised experts on CPU (issue 15, item 1)

Command: `PYTHONPATH=src OMP_NUM_THREADS=1 {cmd.strip()}`; {time.time() - t0:.0f} s.
Machine: {machine()}; shared (load average {load:.2f} at the start), one torch thread, process CPU time,
{args.reps} interleaved rounds, medians of per-round speed ratios (above 1: faster than the loop).

Networks: the library's conv networks for 3x28x28 (nets/conv.py) and MLPs 2352-512-512-(20, 20) /
20-512-512-2352 (nets/mlp.py). Encoders: each its own batch of 128 images; decoders: all the same
128 latents (MMVAE and MoPoE decode the same z with every decoder). `vmap` = what `--set vectorise=true`
runs (nets/stacked.py: parameters stacked at call time, `torch.func.vmap` of `functional_call`);
`grouped` = hand-written grouped convolutions / `baddbmm` over the stacked layout; `stacking` = the
`torch.stack` of all parameters (forward and its backward) alone.

{table}

Reading: on one CPU thread neither stacked form beats the loop: each network's call is already large
enough for oneDNN / MKL, while grouped convolutions and batched products are less tuned kernels, and
vmap adds its own reshapes. So `vectorise=auto` leaves the CPU on the loop and vectorises on CUDA only,
where M small calls are bound by kernel launches; bench/gpu.py measures vectorise on and off on a GPU.
""")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
