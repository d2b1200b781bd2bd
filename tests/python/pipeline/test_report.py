"""The HTML report is one self-contained page that headless Chromium renders with its charts."""
import re
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium not found: scripts/bootstrap installs the Debian package 'chromium'")


def test_report_renders_in_chromium(aq, tmp_path):
    rng = np.random.default_rng(11)
    tensors = {f"down.{i}.conv.weight": rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
               for i in range(6)}
    tensors["down.0.norm.weight"] = np.ones(64, np.float32)
    tensors["outlier.weight"] = rng.standard_normal((64, 512)).astype(np.float32)
    tensors["outlier.weight"][:, ::128] = 20.0  # one spike per group: far lower SQNR
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    q = tmp_path / "m.arrow"
    aq("quantize", src, "-o", q, "--quiet")
    html = tmp_path / "report.html"
    aq("report", q, "-o", html)
    text = html.read_text()
    # Self-contained: no scripts, no links to anything outside the page.
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    png = tmp_path / "shot.png"
    p = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--no-first-run",
                        f"--screenshot={png}", "--window-size=1100,1400", html.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert png.exists() and png.stat().st_size > 10000
    d = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--no-first-run", "--dump-dom",
                        html.as_uri()], capture_output=True, text=True, timeout=120)
    assert d.returncode == 0, d.stderr
    dom = d.stdout
    for chart in ("chart-bits", "chart-sqnr", "chart-size"):
        m = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
        assert m, chart
        bars = m.group(0).count('<rect class="bar"')
        want = {"chart-bits": len(tensors), "chart-sqnr": 7, "chart-size": 2}[chart]
        assert bars == want, (chart, bars)
    # The table lists the worst tensor first: the one with the outlier channel.
    rows = re.findall(r"<tr><td>([^<]+)</td>", dom)
    assert rows[0] == "outlier.weight", rows[:3]
    # The screenshot is not blank: the bars are drawn in colour.
    from PIL import Image  # installed with diffusers
    img = Image.open(png).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    assert any(c == (31, 119, 180) for _, c in colours)  # the 4-bit bars' blue
