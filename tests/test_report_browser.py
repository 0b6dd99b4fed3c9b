"""The HTML report renders in headless Chromium, offline, with a visible plot (not a blank page)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import write_results

from edgeq.report.bench_render import render
from edgeq.report.bench_report import build_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; "
                                                ".ci/install-system.sh does it)"),
]


def _screenshot(page: Path, png: Path, profile: Path) -> None:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--hide-scrollbars", "--virtual-time-budget=5000",
               f"--screenshot={png}", "--window-size=1200,900", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # type: ignore[list-item]
    assert png.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-500:]}"


def test_html_report_renders_plot(tmp_path: Path) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render(build_report(write_results(tmp_path / "results")), "html"))
    png = tmp_path / "shot.png"
    _screenshot(page, png, tmp_path / "profile")
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 900)
    # the first device's table is ~300 px tall; its scatter (markers, Pareto line, axes) sits below it
    plot = image.crop((0, 330, 1200, 900))
    colors = plot.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 200, f"plot region looks blank: {len(colors)} distinct colours"
    # marker colours of the scatter: FP32 blue (#1f77b4) and INT8 orange (#ff7f0e) are drawn
    pixels = {rgb for _, rgb in colors}

    def near(target: tuple[int, int, int]) -> bool:
        return any(sum(abs(a - b) for a, b in zip(rgb, target)) < 30 for rgb in pixels)

    assert near((0x1F, 0x77, 0xB4)) and near((0xFF, 0x7F, 0x0E)), "scatter markers not drawn"

    # control: the same page without plotly's script shows no markers (the check above can fail)
    bare = tmp_path / "bare.html"
    bare.write_text(page.read_text().replace("Plotly.newPlot(", "void("))
    bare_png = tmp_path / "bare.png"
    _screenshot(bare, bare_png, tmp_path / "profile2")
    bare_pixels = {rgb for _, rgb in Image.open(bare_png).convert("RGB").crop((0, 330, 1200, 900)).getcolors(1 << 20)}
    assert not any(sum(abs(a - b) for a, b in zip(rgb, (0xFF, 0x7F, 0x0E))) < 30 for rgb in bare_pixels)
