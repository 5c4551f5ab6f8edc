"""How close the conv networks, training steps and K=1000 likelihoods come to the CPU's limit (the fastest dense kernel)
(issue 15, item 4).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the very call that is timed
(matrix products and convolutions, forward and backward; element-wise work is not counted and is part
of what keeps a workload under the limit). The roofline is the fastest of three dense float32 kernels on
the same thread: a 2048x1024 @ 1024x1024 matrix product (torch.matmul and oneDNN's 1x1 convolution) and a
3x3 channels-last convolution (``roofline_fns``). In every round the roofline and each workload run back to
back; a workload's share of the roofline is the median over rounds of (its GFLOP/s) / (the roofline's
GFLOP/s in that round), so the machine's load of the moment cancels. CPU time of this process by
default (``--clock wall`` for elapsed time).

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/roofline.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import (BATCH, CLOCKS, SUITES, TextbookConvDecoder, TextbookConvEncoder, build_mmvae,  # noqa: E402
                        make_data, make_networks)
from speed import machine  # noqa: E402

from mmvae.evaluation.likelihood import log_likelihoods  # noqa: E402
from mmvae.train.trainer import make_adam  # noqa: E402
from mmvae.nets.conv import ConvDecoder, ConvEncoder, SubpixelTransposedConv, _convolve  # noqa: E402

ROOF_SHAPE = (2048, 1024, 1024)
ROOF_CONV = (128, 128, 8)   # rows, channels (in = out), map size of the 3x3 convolution


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Workload:
    """``fn`` runs the workload once; ``calls`` times per measurement; FLOPs counted on one call."""

    def __init__(self, group: str, name: str, fn, calls: int = 1, note: str = "", bf16: bool = False):
        self.group, self.name, self.fn, self.calls, self.note, self.bf16 = group, name, fn, calls, note, bf16
        fn()                                   # warm-up (allocations, Adam state)
        self.flops = count_flops(fn)

    def time(self, clock) -> float:
        t0 = clock()
        for _ in range(self.calls):
            self.fn()
        return (clock() - t0) / self.calls


def roofline_fns(dtype=torch.float32) -> list[tuple]:
    """(call, FLOPs) of the dense kernels whose best rate is the roofline of a round: the (m x k) @ (k x n)
    product as ``torch.matmul`` (MKL's or OpenBLAS's GEMM) and as a 1x1 convolution on channels-last
    activations (oneDNN's GEMM, the library of the conv layers), and a dense 3x3 convolution, 128 -> 128
    channels on 8x8 maps of 128 rows, channels-last (oneDNN's direct convolution kernel). On some CPUs one
    GEMM is far below the other (an AMD EPYC Zen 5: MKL's float32 GEMM 86 GFLOP/s, oneDNN's 200); on a Zen 4
    EPYC both GEMMs (87-104 float32, 196-202 bf16) stay below what the convolution kernel reaches (121-123
    float32, 235-237 bf16; docs/results/roofline-zen4.md, two runs), and the decoder's own 128 -> 64
    transposed layer ran forward + backward at 95% of the GEMMs' rate, so a roofline of the GEMMs alone is
    no upper bound there: the convolution is in the set since then."""
    m, k, n = ROOF_SHAPE
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    x = torch.randn(m // 64, k, 8, 8, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, k, 1, 1, dtype=dtype)
    rows, ch, size = ROOF_CONV
    x3 = torch.randn(rows, ch, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w3 = torch.randn(ch, ch, 3, 3, dtype=dtype)

    def conv():
        with torch.no_grad():
            return F.conv2d(x, w)

    def conv3():
        with torch.no_grad():
            return F.conv2d(x3, w3, padding=1)
    gemm = 2 * m * k * n
    return [(lambda: a @ b, gemm), (conv, gemm), (conv3, 2 * rows * size * size * ch * ch * 9)]


def network_workloads() -> list[Workload]:
    out = []
    for shape in ((1, 28, 28), (3, 28, 28), (3, 32, 32)):
        tag = "x".join(map(str, shape))
        for fast in (True, False):
            torch.manual_seed(0)
            enc = (ConvEncoder if fast else TextbookConvEncoder)(shape, 20)
            dec = (ConvDecoder if fast else TextbookConvDecoder)(shape, 20)
            kind = "default" if fast else "textbook"
            z_eval, z, x = torch.randn(2048, 20), torch.randn(640, 20), torch.rand(BATCH, *shape)

            def dec_eval(dec=dec, z=z_eval):
                with torch.no_grad():
                    dec(z)

            def dec_train(dec=dec, z=z):
                dec(z).sum().backward()

            def enc_train(enc=enc, x=x):
                loc, raw = enc(x)
                (loc.sum() + raw.sum()).backward()

            out += [Workload("network", f"decoder {tag} {kind}, forward, 2048 rows", dec_eval),
                    Workload("network", f"decoder {tag} {kind}, forward + backward, 640 rows", dec_train),
                    Workload("network", f"encoder {tag} {kind}, forward + backward, {BATCH} rows", enc_train)]
    return out


def layer_workloads() -> list[Workload]:
    """Each layer of the 3x28x28 networks alone, as run_sequential runs it (channels-last): where the
    networks' time goes."""

    out = []
    torch.manual_seed(0)
    dec, enc = ConvDecoder((3, 28, 28), 20), ConvEncoder((3, 28, 28), 20)
    cl = torch.channels_last
    first = dec.net[1]
    for rows, grad in ((2048, False), (640, True)):
        what = "forward" if not grad else "forward + backward"
        z = torch.randn(rows, 20, requires_grad=grad)

        def mm(z=z, grad=grad):
            w = first.weight.permute(0, 2, 3, 1).reshape(20, -1)
            y = torch.addmm(first.bias.repeat(16), z, w)
            if grad:
                y.sum().backward()

        out.append(Workload("decoder layer", f"ConvT 20->128 on 1x1 (a matrix product), {what}, {rows} rows", mm))
        h = torch.randn(rows, 128, 4, 4)
        for i in (3, 5, 7):
            layer = dec.net[i]
            x = h.contiguous(memory_format=cl).requires_grad_(grad)

            def conv(layer=layer, x=x, grad=grad):
                if grad:
                    _convolve(layer, x).sum().backward()
                else:
                    with torch.no_grad():
                        _convolve(layer, x)     # as run_sequential runs it (the bias apart where it is faster)

            cin, cout, k = layer.weight.shape[0], layer.weight.shape[1], layer.kernel_size[0]
            size = h.shape[-1]
            label = f"ConvT {cin}->{cout} {k}x{k}/2 on {size}x{size}"
            out.append(Workload("decoder layer", f"{label}{' (oneDNN transposed)' if i == 7 else ''}, {what}, "
                                f"{rows} rows", conv))
            if i == 7:   # the last layer as the library runs it
                out.append(Workload("decoder layer", f"{label} as sub-pixel conv (default), {what}, {rows} rows",
                                    partial(_subpixel_layer, layer, x, grad)))
            with torch.no_grad():
                h = layer(h)
    x = torch.rand(BATCH, 3, 28, 28)
    for i in (0, 2, 4):
        layer = enc.body[i]
        xin = x.contiguous(memory_format=cl).requires_grad_(i > 0)

        def conv(layer=layer, xin=xin):
            F.relu(_convolve(layer, xin)).sum().backward()

        cin, cout, k, size = layer.in_channels, layer.out_channels, layer.kernel_size[0], x.shape[-1]
        out.append(Workload("encoder layer", f"Conv {cin}->{cout} {k}x{k}/2 on {size}x{size} + ReLU, forward + backward, "
                            f"{BATCH} rows", conv))
        with torch.no_grad():
            x = F.relu(layer(x))
    return out


def _subpixel_layer(layer, x, grad):
    if grad:
        SubpixelTransposedConv.apply(x, layer.weight, layer.bias).sum().backward()
    else:
        with torch.no_grad():
            SubpixelTransposedConv.apply(x, layer.weight, layer.bias)


def set_subpixel(module: torch.nn.Module, on: bool) -> None:
    for m in module.modules():
        if isinstance(m, ConvDecoder):
            m.subpixel = on


def subpixel_pairs(k: int, rows: int, quick: bool = False) -> list[tuple[str, object, object]]:
    """(label, plain, sub-pixel): the same call with the decoders' last layer as oneDNN's transposed
    convolution and as the sub-pixel convolution (nets/conv.SubpixelTransposedConv)."""
    pairs = []
    for shape in ((1, 28, 28), (3, 28, 28), (3, 32, 32))[: 1 if quick else 3]:
        torch.manual_seed(0)
        dec = ConvDecoder(shape, 20)
        tag = "x".join(map(str, shape))
        z_eval, z, g = torch.randn(2048, 20), torch.randn(640, 20), torch.randn(640, *shape)
        last = dec.net[7]
        x_eval = torch.randn(2048, 32, shape[1] // 2, shape[2] // 2).contiguous(memory_format=torch.channels_last)
        x = torch.randn(640, *x_eval.shape[1:]).contiguous(memory_format=torch.channels_last).requires_grad_()

        def layer(on, grad, last=last, x=x, x_eval=x_eval):
            if not grad:
                with torch.no_grad():
                    return SubpixelTransposedConv.apply(x_eval, last.weight, last.bias) if on else last(x_eval)
            out = SubpixelTransposedConv.apply(x, last.weight, last.bias) if on else _convolve(last, x)
            out.sum().backward()

        def decode(on, grad, dec=dec, z=z, z_eval=z_eval, g=g):
            dec.subpixel = on
            if not grad:
                with torch.no_grad():
                    return dec(z_eval)
            dec(z).backward(g)

        cin, c, size = last.in_channels, last.out_channels, shape[1] // 2
        for grad in (False, True):
            what = "forward + backward, 640 rows" if grad else "forward, 2048 rows"
            pairs.append((f"layer ConvT {cin}->{c} 4x4/2 on {size}x{size}, {what}", partial(layer, False, grad),
                          partial(layer, True, grad)))
            pairs.append((f"decoder {tag}, {what}", partial(decode, False, grad), partial(decode, True, grad)))
    suite = SUITES["conv"]
    data = make_data(suite, 4 * BATCH)
    model, _ = build_mmvae("mvae", data.specs, make_networks(suite, 0))
    opt = make_adam(model.parameters(), lr=1e-3)
    batch = data.batch(torch.arange(BATCH))

    def step(on, model=model, opt=opt, batch=batch):
        set_subpixel(model, on)
        loss, _ = model.loss(batch, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    pairs.append((f"training step conv mvae, batch {BATCH}", partial(step, False), partial(step, True)))
    for name in ("mmvae-elbo",) if quick else ("mmvae-elbo", "mopoe"):
        llset = make_data(suite, rows)
        m, _ = build_mmvae(name, llset.specs, make_networks(suite, 0))
        m.eval()

        def estimate(on, m=m, llset=llset):
            set_subpixel(m, on)
            log_likelihoods(m, llset, k=k)

        pairs.append((f"likelihood conv {name}, K={k}, {rows} rows x {len(suite.specs) + 1} subsets",
                      partial(estimate, False), partial(estimate, True)))
    return pairs


def compare_pairs(pairs, reps: int, clock) -> list[str]:
    """Interleaved rounds (the order alternates each round); per round the plain call's time over the
    sub-pixel call's; the median ratio over the rounds."""
    times = {label: ([], []) for label, *_ in pairs}
    for label, plain, fast in pairs:
        plain(), fast()                      # warm-up
    for r in range(reps):
        for label, plain, fast in pairs:
            order = ((0, plain), (1, fast)) if r % 2 == 0 else ((1, fast), (0, plain))
            for slot, fn in order:
                t0 = clock()
                fn()
                times[label][slot].append(clock() - t0)
    lines = ["| workload | oneDNN transposed, ms | sub-pixel, ms | speed-up (median of per-round ratios) |",
             "|---|---|---|---|"]
    for label, (a, b) in times.items():
        ratios = [x / y for x, y in zip(a, b)]
        lines.append(f"| {label} | {1e3 * statistics.median(a):.0f} | {1e3 * statistics.median(b):.0f} | "
                     f"{statistics.median(ratios):.2f}x |")
    return lines


def alternative_pairs(quick: bool = False) -> list[tuple[str, object, object]]:
    """The ways tried for the last layer (and the sub-pixel form on the middle layers), each against
    oneDNN's transposed convolution on channels-last input (the library's path before the sub-pixel
    layer). Every alternative is checked equal to ``F.conv_transpose2d`` before it is timed."""
    from mmvae.nets.conv import _subpixel_forward, _subpixel_weight

    cl = torch.channels_last

    def autograd_subpixel(x, w, b):       # the sub-pixel form with autograd through its ops
        n, _, h, wd = x.shape
        c = w.shape[1]
        y = F.conv2d(x, _subpixel_weight(w), None, padding=1)
        s0, s1, s2, s3 = y.stride()
        out = torch.as_strided(y, (n, c, h, 2, wd, 2), (s0, s1, s2, 2 * c * s1 + s2, s3, c * s1 + s3))
        return out.reshape(n, c, 2 * h, 2 * wd) + b.view(-1, 1, 1)

    def shuffle3x3(x, w, b):               # 3x3 convolution to 4C channels (2.25x the FLOPs) + pixel shuffle
        c, cin = w.shape[1], w.shape[0]
        k2 = _subpixel_weight(w).view(2, 2, c, cin, 2, 2)
        k3 = w.new_zeros(c, 2, 2, cin, 3, 3)
        for a in (0, 1):
            for e in (0, 1):
                k3[:, a, e, :, a:a + 2, e:e + 2] = k2[a, e]
        return F.pixel_shuffle(F.conv2d(x, k3.view(4 * c, cin, 3, 3), b.repeat_interleave(4), padding=1), 2)

    def matmul_fold(x, w, b):               # one matrix product + col2im (F.fold)
        n, cin, h, wd = x.shape
        cols = x.permute(0, 2, 3, 1).reshape(n * h * wd, cin) @ w.reshape(cin, -1)   # (N h w, C 16)
        cols = cols.view(n, h * wd, -1).transpose(1, 2)
        return F.fold(cols, (2 * h, 2 * wd), 4, padding=1, stride=2) + b.view(-1, 1, 1)

    variants = {
        "oneDNN transposed on NCHW input": (lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1), False),
        "sub-pixel 2x2 + interleave, custom backward (kept)":
            (lambda x, w, b: SubpixelTransposedConv.apply(x, w, b), True),
        "sub-pixel 2x2 + interleave, autograd through it": (autograd_subpixel, True),
        "3x3 conv to 4C + pixel_shuffle": (shuffle3x3, True),
        "matmul + col2im (F.fold)": (matmul_fold, True),
    }
    layers = [(32, 1, 14), (32, 3, 14), (32, 3, 16)][: 1 if quick else 3]
    pairs = []
    for cin, c, size in layers + ([] if quick else [(64, 32, 7), (128, 64, 4)]):
        torch.manual_seed(0)
        w, b = (torch.randn(cin, c, 4, 4) * 0.05).requires_grad_(), torch.randn(c).requires_grad_()
        x0 = torch.randn(3, cin, size, size, dtype=torch.float64).contiguous(memory_format=cl)
        with torch.no_grad():
            want = F.conv_transpose2d(x0, w.double(), b.double(), 2, 1)
        names = variants if (cin, c, size) in layers else \
            {k: v for k, v in variants.items() if k.startswith("sub-pixel 2x2 + interleave, custom")}
        for rows, grad in ((2048, False), (640, True)):
            x_cl = torch.randn(rows, cin, size, size).contiguous(memory_format=cl).requires_grad_(grad)
            x_plain = x_cl.detach().contiguous().requires_grad_(grad)

            def run(fn, x, grad=grad, w=w, b=b):
                if grad:
                    fn(x, w, b).sum().backward()
                else:
                    with torch.no_grad():
                        fn(x, w, b)

            def base(x_cl=x_cl, run=run, w=w, b=b):
                run(lambda x, w_, b_: _convolve_weights(x, w_, b_), x_cl)

            for name, (fn, channels_last) in names.items():
                with torch.no_grad():
                    got = fn(x0 if channels_last else x0.contiguous(), w.double(), b.double())
                assert float((got - want).abs().max()) < 1e-10, name
                what = "forward + backward, 640 rows" if grad else "forward, 2048 rows"
                pairs.append((f"ConvT {cin}->{c} on {size}x{size}, {what}: {name}", base,
                              partial(run, fn, x_cl if channels_last else x_plain)))
    return pairs


def _convolve_weights(x, w, b):
    """oneDNN's transposed convolution as run_sequential ran it (channels-last, separate trained bias)."""
    if torch.is_grad_enabled():
        return F.conv_transpose2d(x, w, None, 2, 1).add_(b.view(-1, 1, 1))
    return F.conv_transpose2d(x, w, b, 2, 1)


def step_workloads(specs: list[tuple[str, str]], amp: bool = False) -> list[Workload]:
    """Loss, backward and the Trainer's optimizer (fused Adam); ``amp``: bf16 autocast of the forward."""
    out = []
    for suite_name, name in specs:
        suite = SUITES[suite_name]
        data = make_data(suite, 4 * BATCH)
        model, _ = build_mmvae(name, data.specs, make_networks(suite, 0))
        opt = make_adam(model.parameters(), lr=1e-3)
        batch = data.batch(torch.arange(BATCH))

        def step(model=model, opt=opt, batch=batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss, _ = model.loss(batch, 1.0)
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()

        label = f"{suite_name} {name}, batch {BATCH}" + (", bf16 autocast (--amp bf16)" if amp else "")
        out.append(Workload("training step", label, step, bf16=amp))
    return out


def likelihood_workloads(specs: list[tuple[str, str]], rows: int, k: int) -> list[Workload]:
    out = []
    for suite_name, name in specs:
        suite = SUITES[suite_name]
        data = make_data(suite, rows)
        model, _ = build_mmvae(name, data.specs, make_networks(suite, 0))
        model.eval()
        subsets = len(suite.specs) + 1

        def estimate(model=model, data=data):
            log_likelihoods(model, data, k=k)

        out.append(Workload("likelihood", f"{suite_name} {name}, K={k}, {rows} rows x {subsets} subsets", estimate,
                            note=f"{rows * subsets} estimates"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=2, help="rows per likelihood workload")
    ap.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    ap.add_argument("--quick", action="store_true", help="one setting per group (a smoke run)")
    ap.add_argument("--out", default="docs/results/roofline.md")
    ap.add_argument("--subpixel-only", action="store_true",
                    help="only the sub-pixel vs oneDNN comparison (printed; --out is not written)")
    ap.add_argument("--alternatives", action="store_true",
                    help="only the ways tried for the last decoder layer, against oneDNN (printed; no --out)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)
    clock = CLOCKS[args.clock]
    t0, load = time.time(), os.getloadavg()[0]
    if args.alternatives:
        lines = compare_pairs(alternative_pairs(args.quick), args.reps, clock)
        print("\n".join(lines).replace("oneDNN transposed, ms | sub-pixel, ms", "oneDNN transposed, ms | this way, ms"))
        return
    if args.subpixel_only:
        print("\n".join(compare_pairs(subpixel_pairs(args.k, args.rows, args.quick), args.reps, clock)))
        return
    steps = [("conv", "mvae"), ("conv", "mmvae-elbo"), ("conv", "mopoe"), ("polymnist-3", "mmvae-elbo"),
             ("polymnist-3", "mopoe")]
    lls = [("conv", "mmvae-elbo"), ("conv", "mopoe")]
    work = network_workloads() + ([] if args.quick else layer_workloads())
    if args.quick:
        work, steps, lls = work[:3], steps[:1], lls[:1]
    work += step_workloads(steps) + step_workloads(steps, amp=True) + likelihood_workloads(lls, args.rows, args.k)
    roof, roof16 = roofline_fns(), roofline_fns(torch.bfloat16)
    for fn, _ in roof + roof16:
        fn()

    kernel_rates = {}   # (dtype tag, kernel index) -> rates over the rounds

    def roof_rate(fns, tag="float32"):
        rates = []
        for i, (fn, flops) in enumerate(fns):
            c0 = clock()
            for _ in range(3):
                fn()
            rates.append(3 * flops / (clock() - c0) / 1e9)
            kernel_rates.setdefault((tag, i), []).append(rates[-1])
        return max(rates), max(rates[:2])     # all kernels; the two GEMMs alone (the matmul roofline)

    roof_rates, roof16_rates, rates = [], [], {w.name: [] for w in work}
    shares, shares16 = {w.name: [] for w in work}, {w.name: [] for w in work}
    shares_gemm, gemm_rates = {w.name: [] for w in work}, []
    for r in range(args.reps):
        for w in work:
            here, gemm = roof_rate(roof)
            roof_rates.append(here)
            gemm_rates.append(gemm)
            here16 = roof_rate(roof16, "bf16")[0] if w.bf16 else None
            if here16:
                roof16_rates.append(here16)
            rate = w.flops / w.time(clock) / 1e9
            rates[w.name].append(rate)
            shares[w.name].append(rate / here)
            shares_gemm[w.name].append(rate / gemm)
            if here16:
                shares16[w.name].append(rate / here16)
        print(f"round {r + 1}/{args.reps}: roofline {statistics.median(roof_rates[-len(work):]):.0f} GFLOP/s", flush=True)
    lines = ["| group | workload | GFLOP per call | GFLOP/s | share of the float32 GEMM roofline | "
             "share of the float32 roofline (fastest dense kernel) | share of the bf16 roofline |",
             "|---|---|---|---|---|---|---|"]
    for w in work:
        lines.append(f"| {w.group} | {w.name} | {w.flops / 1e9:.3g} | {statistics.median(rates[w.name]):.0f} | "
                     f"{100 * statistics.median(shares_gemm[w.name]):.0f}% | "
                     f"{100 * statistics.median(shares[w.name]):.0f}% | "
                     + (f"{100 * statistics.median(shares16[w.name]):.0f}% |" if shares16[w.name] else "|"))
    table = "\n".join(lines)
    print(table)
    t1 = time.time()
    subpixel = "\n".join(compare_pairs(subpixel_pairs(args.k, args.rows, args.quick), args.reps, clock))
    print(subpixel)
    subpixel_s = time.time() - t1
    alternatives = "\n".join(compare_pairs(alternative_pairs(args.quick), args.reps, clock)).replace(
        "oneDNN transposed, ms | sub-pixel, ms", "oneDNN transposed, ms | this way, ms")
    print(alternatives)
    if not args.out:
        return
    names = ("matmul", "1x1 conv (oneDNN GEMM)", "3x3 conv")
    kernels = "; ".join(f"{tag} " + ", ".join(f"{names[i]} {statistics.median(kernel_rates[(tag, i)]):.0f}"
                                              for i in range(len(names)) if (tag, i) in kernel_rates)
                        for tag in ("float32", "bf16"))
    cmd = "python bench/roofline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).write_text(f"""# Conv networks, training steps and likelihoods against the roofline of dense kernels (issue 15, item 4)

Command: `PYTHONPATH=src OMP_NUM_THREADS=1 {cmd.strip()}`; {time.time() - t0:.0f} s in all.
Machine: {machine()}; shared (load average {load:.2f} at the start), one torch thread,
{'process CPU time' if args.clock == 'cpu' else 'wall time'}.

Roofline: the fastest of three dense float32 kernels on this thread (`roofline_fns`): the matrix product
{ROOF_SHAPE[0]}x{ROOF_SHAPE[1]} @ {ROOF_SHAPE[1]}x{ROOF_SHAPE[2]} as `torch.matmul` and as a 1x1 channels-last
convolution (oneDNN's GEMM, which on some CPUs is far faster than the BLAS behind `matmul`), and a 3x3
channels-last convolution {ROOF_CONV[1]} -> {ROOF_CONV[1]} channels on {ROOF_CONV[2]}x{ROOF_CONV[2]} maps of
{ROOF_CONV[0]} rows (oneDNN's direct kernel, which on some CPUs runs well above both GEMMs); median
{statistics.median(roof_rates):.0f} GFLOP/s over the rounds (measured before every workload in every round); the
same three kernels in bf16 (measured before every bf16 workload): median {statistics.median(roof16_rates):.0f} GFLOP/s.
The "GEMM roofline" column is issue 15's matmul roofline: the faster of the two GEMMs alone, median
{statistics.median(gemm_rates):.0f} GFLOP/s (where a convolution kernel outruns both GEMMs, as on a Zen 4 EPYC, a
share of it overstates how close a workload comes to the machine's limit; the next column is the strict one).
Medians of each kernel alone, GFLOP/s: {kernels}.
FLOPs: `torch.utils.flop_counter.FlopCounterMode` on the timed call (convolutions and matrix products,
forward and backward, 2 FLOPs per multiply-add); the share is the median over {args.reps} rounds of the
workload's rate over the roofline's rate of that round. "default" = the library's networks
(nets/conv.py: channels-last, 1x1 layers as matrix products, separate trained bias, in-place ReLU,
the last layer as a sub-pixel convolution);
"textbook" = the same layers run as the plain `nn.Sequential`. Training steps: model loss + backward +
the Trainer's optimizer (fused Adam) on batch {BATCH} (bench/contenders.py settings, default networks); the
bf16 rows autocast the forward pass as `--amp bf16` (and `amp=auto` on this CPU) does: their share of the
float32 roofline says how fast they run against float32's limit (it can pass 100% where bf16 matrix
products are native), their share of the bf16 roofline how close they come to bf16's own limit. Likelihoods:
`mmvae.evaluation.likelihood.log_likelihoods` with K={args.k} samples per estimate, every modality
alone and all together.

{table}

## The last decoder layer as a sub-pixel convolution

ConvTranspose2d(32 -> C, 4x4, stride 2, padding 1) with C = 1 or 3 gives oneDNN's transposed kernel
only C output channels to vectorise over (the "oneDNN transposed" layer rows above). The same map is a
stride-1 2x2 convolution of the input padded by one to 4C channels (one group per output phase (a, b))
whose phases interleave into the 2x map: `nets/conv.SubpixelTransposedConv`, whose backward is the
transposed convolution's own (`aten.convolution_backward`), so values and gradients are those of the
textbook layer (tests/test_conv_fast.py, float64). The library runs it on CPU for 4x4/2 transposed layers with
8 C_out <= C_in, i.e. the decoder's last layer only (the middle layers are slower that way: last rows of
the second table). The FLOP counter counts the sub-pixel convolution's work (each phase computes one
extra row and column of its (h+1)x(w+1) map: 15% more multiply-adds at 14x14), so "default" rows count
slightly more FLOPs than "textbook" ones; the ratios below are times, not rates.

Before (oneDNN's transposed kernel, the library's path until now) / after (sub-pixel), same process,
same weights, {args.reps} interleaved rounds whose order alternates ({subpixel_s:.0f} s), process CPU time;
the speed-up is the median of the per-round time ratios:

{subpixel}

The ways tried for the last layer, each against oneDNN's transposed convolution on channels-last input
(the same protocol; every way is checked equal to `F.conv_transpose2d` in float64 first). "Autograd
through it" differentiates the sub-pixel ops themselves (as_strided's backward is a slow scatter), which
is why the kept version borrows the transposed convolution's backward:

{alternatives}
""")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
