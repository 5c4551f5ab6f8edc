"""What adding a transposed convolution's bias after it, rather than fused into oneDNN's kernel, buys when no
gradient is recorded (nets/conv._bias_apart, switch ``mmvae.nets.conv.TRANSPOSED_BIAS_APART``).

The likelihood estimator decodes K codes per row without gradients, where the networks used to hand the
bias to oneDNN's transposed convolution. Three tables, each with the switch on and off in one process,
interleaved rounds (alternating order), CPU time of one thread, the median of the per-round ratios
off / on (above 1: the switch is faster):

1. each transposed convolution that ``run_sequential`` hands to oneDNN, forward, ``--decode-rows`` rows;
2. the whole conv decoders, forward, ``--decode-rows`` codes;
3. whole K=1000 estimates (``log_likelihoods``, every subset) of ``--rows`` rows, on bench/contenders.py's
   conv settings and optionally a trained run folder (``--run``).

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bias_apart.py --out docs/results/bias-apart.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from likelihood_chunks import _cases  # noqa: E402
from speed import machine  # noqa: E402

import mmvae.nets.conv as conv  # noqa: E402
from mmvae.evaluation.likelihood import log_likelihoods  # noqa: E402

SHAPES = ((1, 28, 28), (3, 28, 28), (3, 32, 32))


def ab(fn, reps: int, calls: int = 1) -> tuple[float, float, list[float]]:
    """Median seconds per call with the switch off and on, and the per-round ratios off / on."""
    times = {True: [], False: []}
    try:
        for r in range(reps + 1):                              # round 0 warms up both sides
            for flag in ((True, False) if r % 2 else (False, True)):
                conv.TRANSPOSED_BIAS_APART = flag
                t0 = time.process_time()
                for _ in range(calls):
                    fn()
                if r:
                    times[flag].append((time.process_time() - t0) / calls)
    finally:
        conv.TRANSPOSED_BIAS_APART = True
    ratios = [off / on for off, on in zip(times[False], times[True])]
    return statistics.median(times[False]), statistics.median(times[True]), ratios


def _line(cells: list[str], off: float, on: float, ratios: list[float]) -> str:
    return ("| " + " | ".join(cells) + f" | {1e3 * off:.2f} | {1e3 * on:.2f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f}–{max(ratios):.2f} |")


#: transposed convolutions beyond the library's decoders (C_in, C_out, kernel, stride, padding, output
#: padding, map size): the rule of nets/conv._bias_apart (the bias apart when the output map is not a
#: multiple of the stride) rests on them; the kernel's size against the stride does not decide it
PROBES = ((128, 64, 3, 2, 1, 0, 4), (64, 32, 3, 2, 1, 0, 7), (32, 16, 3, 2, 1, 0, 14), (256, 128, 3, 2, 1, 0, 8),
          (128, 64, 5, 2, 2, 0, 4), (128, 64, 3, 2, 0, 0, 4), (128, 64, 4, 2, 1, 1, 4), (128, 64, 5, 3, 2, 0, 4),
          (128, 64, 4, 3, 0, 0, 4),
          (128, 64, 3, 2, 1, 1, 4), (64, 32, 3, 2, 1, 1, 7), (128, 64, 5, 3, 1, 0, 4), (128, 64, 3, 1, 1, 0, 4),
          (128, 64, 2, 2, 0, 0, 4), (128, 64, 4, 2, 1, 0, 4), (64, 32, 4, 2, 1, 0, 7), (128, 64, 6, 2, 2, 0, 4),
          (128, 64, 3, 3, 0, 0, 4), (128, 64, 4, 2, 0, 0, 4))


def _decoder_layers(rows: int):
    """(decoder, layer, input) for each transposed convolution ``run_sequential`` hands to oneDNN."""
    for shape in SHAPES:
        dec = conv.ConvDecoder(shape, 20)
        h = torch.randn(rows, 20)
        with torch.no_grad():
            for layer in dec.net:                              # follow the decoder's maps layer by layer
                if (type(layer) is nn.ConvTranspose2d and h.dim() == 4 and not conv._is_transposed_of_point(layer, h)
                        and not conv._is_subpixel_transposed(layer, h)):
                    yield f"{shape[0]}x{shape[1]}x{shape[2]} decoder", layer, h.contiguous(memory_format=torch.channels_last)
                h = layer(h)
    for cin, cout, k, s, p, o, size in PROBES:
        yield "probe", nn.ConvTranspose2d(cin, cout, k, s, p, o), torch.randn(rows, cin, size, size).contiguous(
            memory_format=torch.channels_last)


def layer_rows(rows: int, reps: int) -> list[str]:
    """Fused bias ("off") against the convolution then a separate add ("on"), whatever the rule chooses."""
    lines = []
    for where, layer, x in _decoder_layers(rows):
        w, b, st, pad, o = layer.weight.detach(), layer.bias.detach(), layer.stride, layer.padding, layer.output_padding
        calls = {False: lambda: F.conv_transpose2d(x, w, b, st, pad, o),
                 True: lambda: F.conv_transpose2d(x, w, None, st, pad, o).add_(b.view(-1, 1, 1))}
        off, on, ratios = ab(lambda: calls[conv.TRANSPOSED_BIAS_APART](), reps)
        k, s = layer.kernel_size[0], layer.stride[0]
        with torch.no_grad():
            rule = conv._bias_apart(layer, x)
            size = calls[False]().shape[-1]
        pads = f", padding {pad[0]}" + (f", output padding {o[0]}" if o[0] else "")
        line = _line([where, f"ConvT {layer.in_channels}->{layer.out_channels} {k}x{k}/{s}{pads}, {x.shape[-1]}x"
                      f"{x.shape[-1]} -> {size}x{size}", str(k % s), str(size % s), "apart" if rule else "fused"],
                     off, on, ratios)
        print(line, flush=True)
        lines.append(line)
    return lines


def decoder_rows(rows: int, reps: int) -> list[str]:
    lines = []
    for shape in SHAPES:
        dec = conv.ConvDecoder(shape, 20)
        z = torch.randn(rows, 20)

        def decode(dec=dec, z=z):
            with torch.no_grad():
                dec(z)
        line = _line([f"{shape[0]}x{shape[1]}x{shape[2]}", f"decoder, {rows} codes"], *ab(decode, reps))
        print(line, flush=True)
        lines.append(line)
    return lines


def estimate_rows(suites: list[str], model_name: str, rows: int, k: int, reps: int, run: str | None) -> list[str]:
    cases = _cases(suites, model_name, rows, run, rows)
    lines = []
    for name, model, data in cases:
        values = {}

        def estimate(model=model, data=data):
            values[conv.TRANSPOSED_BIAS_APART] = log_likelihoods(model, data, k=k)
        off, on, ratios = ab(estimate, reps)
        same = all(torch.allclose(values[True][s], values[False][s], rtol=0, atol=1e-3) for s in values[True])
        line = _line([name, f"K={k}, {len(data)} rows, {len(values[True])} subsets",
                      "yes" if same else "NO"], off, on, ratios)
        print(line, flush=True)
        lines.append(line)
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decode-rows", type=int, default=1024, help="codes per decoder call (the CPU's pass size)")
    ap.add_argument("--suites", nargs="+", default=["conv", "polymnist-3"], help="bench/contenders.py settings")
    ap.add_argument("--model", default="mopoe")
    ap.add_argument("--rows", type=int, default=4, help="rows per likelihood estimate")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--run", default=None, help="a trained run folder to estimate on as well")
    ap.add_argument("--reps", type=int, default=10, help="interleaved rounds (layers and decoders: 2x)")
    ap.add_argument("--out", default="docs/results/bias-apart.md", help="markdown report ('' to skip)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    layers = layer_rows(args.decode_rows, 2 * args.reps)
    decoders = decoder_rows(args.decode_rows, 2 * args.reps)
    estimates = estimate_rows(args.suites, args.model, args.rows, args.k, args.reps, args.run)
    if not args.out:
        return
    cmd = "python bench/bias_apart.py " + " ".join(argv if argv is not None else sys.argv[1:])
    head = "| off, ms | on, ms | off / on (median of rounds) | range over rounds |"
    rule = "|---|---|---|---|"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(f"""# A transposed convolution's bias added after it, also without gradients (nets/conv._bias_apart)

Command: `PYTHONPATH=src OMP_NUM_THREADS=1 {cmd.strip()}`; {time.time() - t0:.0f} s in all.
Machine: {machine()}; one torch thread, process CPU time, interleaved rounds (alternating order).

Forward passes without gradients, {args.decode_rows} rows per call (the likelihood estimator's pass on a
CPU), {2 * args.reps} rounds. First each transposed convolution that `run_sequential` hands to oneDNN, and
other shapes ("probe"), with the bias fused into oneDNN's kernel ("off") against the kernel without bias
followed by a separate add ("on"); the fifth column says which one the library's rule picks (apart where
the output map is not a multiple of the stride, so that oneDNN's output phases differ in size):

| where | layer | kernel mod stride | output mod stride | the rule (nets/conv._bias_apart) | {head[2:]}
|---|---|---|---|---|{rule[1:]}
{chr(10).join(layers)}

Then the switch itself (`TRANSPOSED_BIAS_APART`; "off": the bias fused whenever no gradient is recorded,
as before; "on", the default: the rule above), on whole decoders and whole estimates:

| decoder | call | {head[2:]}
|---|---|{rule[1:]}
{chr(10).join(decoders)}

Whole estimates (`log_likelihoods`, {args.reps} rounds; "same": every estimate within 1e-3 nats of the
other side's):

| case | estimate | same | {head[2:]}
|---|---|---|{rule[1:]}
{chr(10).join(estimates)}
""")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
