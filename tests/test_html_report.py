"""RUN/report.html (issue 14): one self-contained page after `mmvae evaluate`, opened in headless
Chromium (Debian's `chromium`; skipped where absent) with every image loaded and no console message."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from mmvae.cli import main
from mmvae.evaluation.html_report import write_html_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.alt) || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors,
                                    height: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def open_in_chromium(page: Path) -> tuple[dict, list[str]]:
    """Load a copy of ``page`` with a probe script in headless Chromium: (probe result, console lines)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", "--dump-dom",
                               probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, (done.returncode, done.stderr[-2000:])
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    assert main(["train", "--dataset", "toy", "--set", "data.n=400", "--model", "mvae", "--epochs", "3",
                 "--batch-size", "64", "--latent-dim", "4", "--set", "hidden=16", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--k", "3", "--rows", "40", "--classifier-epochs", "1",
                 "--joint-samples", "200"]) == 0
    return run


def test_report_is_self_contained_with_every_part(evaluated_run):
    text = (evaluated_run / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)=['"]([^'"]*)['"]""", text)
    assert sources and all(s.startswith("data:") for s in sources), [s[:40] for s in sources if not s.startswith("data:")]
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert str(evaluated_run.parent) not in text          # no path of this machine: the page can be shared
    for part in ("Configuration", "Training", "alt='training curves'", "Metrics", "Cross coherence",
                 "Joint coherence", "Latent accuracy", "Log-likelihoods", "Relatedness", "Cross-generation",
                 "Latent space", "prior p(z)", "alt='cross_a_to_b'", "alt='latent_tsne'", "alt='w2_histogram_a_b'"):
        assert part in text, part
    record = json.loads((evaluated_run / "evaluation" / "metrics.json").read_text())
    classes = json.loads((evaluated_run / "config.json").read_text())["num_classes"]
    # every cross coherence beside its chance level (1/C without a chance block)
    for key, value in record["cross_coherence"].items():
        row = re.search(rf"<td>{re.escape(key.replace('>', '&gt;'))}</td><td class='num'>([^<]*)</td>"
                        rf"<td class='num'>([^<]*)</td>", text)
        assert row and float(row.group(1)) == pytest.approx(value, abs=1e-3), key
        assert float(row.group(2)) == pytest.approx(1 / classes, abs=1e-3)


def test_report_uses_a_chance_block_and_survives_missing_keys(evaluated_run, tmp_path):
    record = json.loads((evaluated_run / "evaluation" / "metrics.json").read_text())
    record["chance"] = {"cross_coherence": 0.123, "joint_coherence": {"value": 0.0456}}
    out = write_html_report(evaluated_run, record, tmp_path / "a.html").read_text()
    assert "0.123" in out and "0.046" in out
    for drop in ("pictures", "cross_coherence", "log_likelihood", "notes", "timings", "relatedness"):
        record.pop(drop, None)
    record["cross_coherence_mean"] = {"a->b": 0.5}
    out = write_html_report(evaluated_run, record, tmp_path / "b.html").read_text()
    assert "Cross coherence (posterior mean)" in out and "Cross-generation" not in out
    assert "Not evaluated yet" in write_html_report(evaluated_run, {}, tmp_path / "c.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_report_renders_in_chromium_with_every_image_and_no_console_message(evaluated_run, tmp_path):
    html_text = (evaluated_run / "report.html").read_text()
    probe, console = open_in_chromium(evaluated_run / "report.html")
    assert probe["images"] == html_text.count("<img ") >= 8
    assert probe["broken"] == [] and probe["errors"] == [] and console == []
    assert probe["height"] > 2000                                   # laid out, not an empty page
    # the probe does see a broken picture (the check can fail)
    bad = tmp_path / "bad.html"
    bad.write_text(html_text.replace("base64,", "base64,AAAA", 1))
    probe, _ = open_in_chromium(bad)
    assert len(probe["broken"]) == 1
