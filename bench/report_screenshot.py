"""docs/report-screenshot.png: the top of a real RUN/report.html, rendered by headless Chromium.

Trains the default run (`mmvae train`, MVAE on offline mnist-label) for --epochs, evaluates it
(`mmvae evaluate RUN --k K`), screenshots report.html and writes a small PNG (downscaled, 64 colours).

    python bench/report_screenshot.py [--epochs 10] [--k 100] [--scale 0.6] [--out docs/report-screenshot.png]

Needs Debian's `chromium` (apt-get install chromium).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def mmvae(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mmvae", *args], check=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--scale", type=float, default=0.6, help="downscaling of the screenshot")
    ap.add_argument("--out", default=str(ROOT / "docs" / "report-screenshot.png"))
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs headless Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "mvae-mnist-label"
        mmvae("train", "--epochs", str(args.epochs), "--out", str(run), "--quiet")
        mmvae("evaluate", str(run), "--k", str(args.k), "--quiet")
        shot = Path(tmp) / "shot.png"
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", f"--screenshot={shot}",
                        f"--window-size={args.width},{args.height}", (run / "report.html").as_uri()],
                       check=True, capture_output=True, timeout=300)
        from PIL import Image

        img = Image.open(shot).convert("RGB")
        img = img.resize((int(img.width * args.scale), int(img.height * args.scale)), Image.LANCZOS)
        img.quantize(colors=64).save(args.out, optimize=True)
    print(f"{args.out}: {Path(args.out).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
