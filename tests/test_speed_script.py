"""bench/speed.py runs without MultiVae (the CI environment) and writes its table: a smoke test that keeps
the throughput benchmark runnable (the figures themselves come from the full runs in docs/results/)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_module(name: str):
    """bench/<name>.py imported as a module (bench/ on the path while it loads its siblings)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _speed_module():
    return _bench_module("speed")


def test_speed_runs_every_library_contender_and_reports_the_targets(tmp_path):
    speed = _speed_module()
    out = tmp_path / "speed.md"
    speed.main(["--suite", "mlp", "--models", "mvae", "meme", "--impls", "mmvae", "mmvae-fused", "hand",
                "trainer-step", "trainer", "--reps", "2", "--block", "1", "--trainer-reps", "1",
                "--trainer-epochs", "1", "--rows", "256", "--out", str(out)])
    text = out.read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| mlp |")}
    assert set(rows) == {"mvae", "meme"}
    head = next(line for line in text.splitlines() if line.startswith("| setting |"))
    assert "mmvae / hand" in head and "trainer-step / mmvae-fused" in head and "trainer / mmvae-epoch" in head
    cells = [c.strip() for c in rows["mvae"].split("|")[3:-1]]
    assert all(float(c.replace(",", "")) > 0 for c in cells)          # every contender ran
    meme = [c.strip() for c in rows["meme"].split("|")[3:-1]]
    assert meme[2] == ""                                               # no hand-written MEME loss
    assert "Target Trainer's per-step overhead" in text


def test_speed_models_races_the_hand_written_losses(tmp_path, monkeypatch):
    """bench/speed_models.py finds bench/hand/<model>.py and races it as ``hand`` (models without MultiVae, so
    this runs in CI; tiny networks); a model without a hand file keeps blank hand cells."""
    monkeypatch.setattr(sys, "path", list(sys.path))                  # the script adds bench/ to the path
    spec = importlib.util.spec_from_file_location("speed_models_bench", ROOT / "bench" / "speed_models.py")
    speed_models = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, speed_models)         # its dataclasses look the module up
    spec.loader.exec_module(speed_models)
    found = {n for n in speed_models.ENTRIES if speed_models.hand_loss(n) is not None}
    assert {"mvtcae", "jmvae", "mmjsd", "crmvae", "cvae", "telbo"} <= found and "meme" not in found
    monkeypatch.setattr(speed_models, "HIDDEN", 32)
    monkeypatch.setattr(speed_models, "ROWS", 256)
    out = tmp_path / "speed-models.md"
    speed_models.main(["--models", "mmjsd", "meme", "--impls", "mmvae", "mmvae-fused", "hand", "--reps", "2",
                       "--block", "1", "--out", str(out)])
    text = out.read_text()
    head = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert [c.strip() for c in head.split("|")[2:-2]] == [
        "mmvae samples/s", "mmvae-fused samples/s", "hand samples/s", "mmvae / hand", "mmvae-fused / hand"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-2]]
            for line in text.splitlines() if line.startswith(("| mmjsd |", "| meme |"))}
    assert all(float(c.replace(",", "")) > 0 for c in rows["mmjsd"])  # every contender ran, both ratios
    assert rows["meme"][2:] == ["", "", ""]                             # no hand-written MEME loss
    assert "- Hand loop (issue 15" in text and "No generic hand-written loop" not in text


def test_machine_line_names_the_cpu_generation():
    """Roofline shares depend on the core (a Zen 4 and a Zen 5 EPYC both read "AMD EPYC"): where
    /proc/cpuinfo gives family and model, the machine line carries them."""
    line = _speed_module().cpu_name()
    assert line
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return
    if "cpu family" in text:
        assert "family " in line and "model " in line


def test_likelihood_chunks_script_writes_its_tables(tmp_path):
    """bench/likelihood_chunks.py (the measurement behind CPU_ROWS_PER_PASS) stays runnable."""
    module = _bench_module("likelihood_chunks")
    out = tmp_path / "chunks.md"
    module.main(["--suites", "mlp", "--samples", "2", "--sizes", "32", "64", "--reps", "1", "--k", "6",
                 "--rows", "3", "--out", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| mlp mopoe |")]
    assert len(rows) == 2 and "memory budget alone" in rows[0]
    assert all(float(line.split("|")[4]) > 0 for line in rows)
    assert sum(line.startswith(("| 1x28x28 |", "| 3x28x28 |", "| 3x32x32 |")) for line in text.splitlines()) == 6


def test_roofline_kernels_declare_the_flops_they_run():
    """Each roofline kernel's rate is its declared FLOPs over its time: the declaration must be what torch's
    FLOP counter counts on the call (two GEMMs and the 3x3 convolution, float32 and bf16)."""
    import torch

    roofline = _bench_module("roofline")
    for dtype in (torch.float32, torch.bfloat16):
        kernels = roofline.roofline_fns(dtype)
        assert len(kernels) == 3
        for fn, flops in kernels:
            assert roofline.count_flops(fn) == flops


def test_roofline_script_reports_both_rooflines(tmp_path):
    """bench/roofline.py --quick writes the shares of the GEMM (issue's matmul) roofline and of the strict one;
    the strict roofline is the faster, so every strict share is at most the GEMM share."""
    roofline = _bench_module("roofline")
    out = tmp_path / "roofline.md"
    roofline.main(["--quick", "--reps", "1", "--k", "20", "--rows", "1", "--out", str(out)])
    text = out.read_text()
    assert "share of the float32 GEMM roofline" in text and "fastest dense kernel" in text
    assert "Medians of each kernel alone" in text and "3x3 conv" in text
    rows = [line.split("|") for line in text.splitlines()
            if line.startswith(("| network |", "| training step |", "| likelihood |"))]
    assert len(rows) >= 4
    for row in rows:
        gemm, strict = float(row[5].strip(" %")), float(row[6].strip(" %"))
        assert 0 < strict <= gemm


def test_grad_layout_script_times_both_sides(tmp_path):
    """bench/grad_layout.py writes the kernel rows and one step row per case and contender, and leaves the
    switch on."""
    import mmvae.nets.conv as conv

    module = _bench_module("grad_layout")
    out = tmp_path / "grad-layout.md"
    module.main(["--cases", "conv:mopoe", "--impls", "mmvae-fused", "--reps", "1", "--block", "1", "--rows", "256",
                 "--out", str(out)])
    text = out.read_text()
    assert sum(line.startswith(("| float32 128x128x4x4 |", "| bfloat16 128x128x4x4 |")) for line in text.splitlines()) == 4
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| conv | mopoe | mmvae-fused |")]
    assert len(rows) == 1 and float(rows[0][4]) > 0 and float(rows[0][5]) > 0
    assert conv.GRAD_LAYOUT is True


def test_bias_apart_script_times_both_sides(tmp_path):
    """bench/bias_apart.py writes a row per decoder layer and probe shape (with the rule's choice), per
    decoder and per estimate (equal on both sides), and leaves the switch on."""
    import mmvae.nets.conv as conv

    module = _bench_module("bias_apart")
    out = tmp_path / "bias-apart.md"
    module.main(["--decode-rows", "8", "--suites", "conv", "--rows", "1", "--k", "4", "--reps", "1", "--out", str(out)])
    lines = out.read_text().splitlines()
    layers = [line.split("|") for line in lines if line.startswith(("| 1x28x28 decoder |", "| 3x28x28 decoder |",
                                                                    "| 3x32x32 decoder |", "| probe |"))]
    assert len(layers) == 6 + len(module.PROBES)
    for row in layers:      # the rule: apart exactly where the output is not a multiple of the stride
        assert row[5].strip() == ("apart" if row[4].strip() != "0" else "fused")
    assert sum(line.startswith(("| 1x28x28 | decoder", "| 3x28x28 | decoder", "| 3x32x32 | decoder"))
               for line in lines) == 3
    estimates = [line.split("|") for line in lines if line.startswith("| conv mopoe |")]
    assert len(estimates) == 1 and estimates[0][3].strip() == "yes"
    assert conv.TRANSPOSED_BIAS_APART is True
