"""``RUN/analysis/report.html``: self-contained, carries the landscape data and thumbnails, and
renders in headless Chromium without console errors."""

from __future__ import annotations

import base64
import html as htmllib
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from hetsiren.analysis.report import MAX_REPORT_POINTS

K = 3


def _report_data(html: str) -> dict:
    m = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no embedded report data"
    return json.loads(m.group(1))


def _png_of(data_uri: str) -> Image.Image:
    assert data_uri.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    im.load()
    return im


@pytest.fixture(scope="module")
def report(analyzed_run):
    run, result = analyzed_run
    path = run / "analysis" / "report.html"
    return path, path.read_text(encoding="utf-8"), result


def test_report_is_self_contained(report):
    path, html, _ = report
    assert not re.search(r"https?://", html), "the report must not load anything from a network"
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=\"(?!data:)", html)
    assert "<link" not in html
    # every script is inline
    assert all("src=" not in tag for tag in re.findall(r"<script[^>]*>", html))


def test_report_carries_the_landscape_and_thumbnails(report, analyzed_run):
    path, html, result = report
    run, _ = analyzed_run
    data = _report_data(html)
    z = np.load(run / "latent.npy")
    labels = np.load(run / "analysis" / "labels.npy")
    assert data["n_total"] == len(z) == data["n_shown"] <= MAX_REPORT_POINTS
    assert data["label"] == labels[data["index"]].tolist()
    pca = data["spaces"]["PCA"]
    coords = np.load(run / "analysis" / "pca_coords.npy")
    np.testing.assert_allclose(pca["x"], coords[data["index"], 0], atol=1e-3)
    np.testing.assert_allclose(pca["y"], coords[data["index"], 1], atol=1e-3)
    assert len(pca["reps"]) == K
    assert [c["population"] for c in data["clusters"]] == np.bincount(labels).tolist()
    assert [c["rep"] for c in data["clusters"]] == result.clustering.representatives.tolist()
    for c in data["clusters"]:
        im = _png_of(c["thumb"])
        assert im.width > im.height > 50  # 3 x 2 panels
        assert (run / "analysis" / c["map"]).is_file()
    assert [t["pc"] for t in data["trajectories"]] == [1, 2]
    for t in data["trajectories"]:
        assert len(t["thumbs"]) == len(t["maps"]) == len(t["t"]) == 4
        _png_of(t["thumbs"][0])
    assert set(data["figures"]) >= {"density_pca", "explained_variance", "training_curves"}
    for uri in data["figures"].values():
        _png_of(uri)
    assert data["has_chimerax"] is True
    # the run's config is on the page
    assert "particles.star" in html and "preprocessing" in html


def test_report_subsamples_large_landscapes(tmp_path, formats_dir):
    from analysis_helpers import balanced_states, blobs, make_run

    from hetsiren.analysis.analyze import analyze_run

    n = MAX_REPORT_POINTS + 500
    run = make_run(tmp_path / "run", formats_dir / "relion5.star", blobs(balanced_states(n)))
    analyze_run(run, k=3, pcs=0, decode=False)
    data = _report_data((run / "analysis" / "report.html").read_text())
    assert data["n_total"] == n and data["n_shown"] == MAX_REPORT_POINTS
    assert data["index"] == sorted(set(data["index"]))
    assert data["clusters"][0]["thumb"] is None
    assert sum(c["population"] for c in data["clusters"]) == n


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _console_lines(stderr: str) -> list[str]:
    """Lines Chromium logs for the page's console (messages and uncaught exceptions)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _, _ = report
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    base = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
            "--v=0", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", path.resolve().as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    html = dom.stdout
    # the script ran to its end and drew every particle on the canvas
    assert re.search(r'<body[^>]*data-ready="1"', html)
    canvas = re.search(r'<canvas id="plot"[^>]*>', html)
    assert canvas and 'data-drawn="200"' in canvas.group(0)
    # one card with a map thumbnail per cluster, one legend chip per cluster
    assert len(re.findall(r'<img[^>]+class="thumb"', html)) == K
    assert len(re.findall(r'class="cluster"', html)) == K
    assert len(re.findall(r'class="chip"', html)) == K
    assert html.count('alt="PC1 trajectory frame"') == 1
    assert "hetsiren export" in html
    shot = tmp_path / "report.png"
    res = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000",
                          path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert _console_lines(res.stderr) == []
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        # not a blank page
        assert np.asarray(im.convert("L")).std() > 10
    print(f"screenshot: {shot}")


# Drives the page as a user would, after its own script has run: hover until the tooltip shows,
# click a cluster card, then drag a lasso around the whole plot. Results go to data-* attributes.
_INTERACT = """<script>
(function () {
  var canvas = document.getElementById("plot"), r = canvas.getBoundingClientRect();
  function fire(target, type, x, y) {
    target.dispatchEvent(new MouseEvent(type, {clientX: r.left + x, clientY: r.top + y,
                                               bubbles: true}));
  }
  var tip = document.getElementById("tooltip");
  for (var x = 60; x < 750 && tip.hidden; x += 3) {
    for (var y = 10; y < 560 && tip.hidden; y += 3) { fire(canvas, "mousemove", x, y); }
  }
  document.body.dataset.tooltip = tip.hidden ? "" : tip.textContent;
  document.querySelectorAll(".cluster")[1].click();
  document.body.dataset.afterClick = document.getElementById("selection").textContent;
  var corners = [[63, 15], [743, 15], [743, 551], [63, 551], [63, 16]];
  fire(canvas, "mousedown", corners[0][0], corners[0][1]);
  corners.forEach(function (p) { fire(canvas, "mousemove", p[0], p[1]); });
  fire(window, "mouseup", 63, 16);
  document.body.dataset.afterLasso = document.getElementById("selection").textContent;
})();
</script></body>"""


def test_report_interaction_in_headless_chromium(report, tmp_path):
    path, html, result = report
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    page = tmp_path / "interact.html"
    page.write_text(html.replace("</body>", _INTERACT, 1), encoding="utf-8")
    dom = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attrs = {k: htmllib.unescape(v) for k, v in re.findall(r'data-([\w-]+)="([^"]*)"', body)}
    assert re.match(r"particle \d+ \u00b7 cluster \d \u00b7 \(", attrs["tooltip"])
    n1 = int(result.clustering.populations[1])
    assert f"Clusters 1: {n1} particles" in attrs["after-click"]
    assert "--clusters 1 -o subset.star" in attrs["after-click"]
    assert "Lasso: 200 of the 200 plotted particles" in attrs["after-lasso"]
    assert "--region region.json" in attrs["after-lasso"]


def test_user_text_is_never_substituted_again(tmp_path, formats_dir):
    # Before: chained str.replace put the escaped config in, then replaced %%DATA%% inside it,
    # so a path holding that marker injected raw JSON/HTML into the page.
    from analysis_helpers import balanced_states, blobs, make_run

    from hetsiren.analysis.analyze import analyze_run

    hostile = "/data/%%DATA%%/</script><script>alert(1)</script>%%SCRIPT%%.star"
    z = blobs(balanced_states(60))
    pages = {}
    for name, particles in (("plain", "/data/p.star"), ("run%%TITLE%%", hostile)):
        run = make_run(tmp_path / name, particles, z)
        analyze_run(run, k=3, pcs=0, decode=False)
        pages[name] = (run / "analysis" / "report.html").read_text(encoding="utf-8")
    page = pages["run%%TITLE%%"]
    assert page.count("<script") == pages["plain"].count("<script")
    assert "alert(1)</script>" not in page
    assert _report_data(page)["run"]["particles"] == hostile
    assert _report_data(page)["run"]["name"] == "run%%TITLE%%"
    pre = re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)
    assert htmllib.escape(hostile) in pre  # shown as text, escaped once


def test_report_shows_surfaces_in_headless_chromium(report, analyzed_run, tmp_path):
    """One shaded isosurface picture per cluster map, in the page and as PNGs."""
    path, html, result = report
    run, _ = analyzed_run
    data = _report_data(html)
    assert [s["id"] for s in data["surfaces"]] == list(range(K))
    for s in data["surfaces"]:
        im = np.asarray(_png_of(s["png"]).convert("L"))
        assert im.shape[1] == 3 * im.shape[0]  # three views
        assert (im < 200).mean() > 0.01  # a surface was drawn, not a blank sheet
        assert (run / "analysis" / "surfaces" / f"cluster_{s['id']:02d}.png").is_file()
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    dom = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    card = re.search(r'<section class="card" id="surface-card"(.*?)</section>', dom.stdout, re.S)
    assert card and "hidden" not in card.group(1)[:20]
    assert len(re.findall(r'<img src="data:image/png[^>]+alt="cluster \d isosurface"',
                          card.group(1))) == K


def test_report_names_a_collapsed_training(tmp_path, formats_dir, report):
    from analysis_helpers import balanced_states, blobs, make_run

    from hetsiren.analysis.analyze import analyze_run
    from hetsiren.rundir import LOG

    assert 'id="health-warning"' not in report[1]
    run = make_run(tmp_path / "run", formats_dir / "relion5.star", blobs(balanced_states(300)))
    # the collapse: z std 0.035 → 0.0017 while the data term stays at 1.28
    (run / LOG).write_text("".join(json.dumps({"epoch": i + 1, "total": d, "data": d,
                                               "z_std": z}) + "\n"
                                   for i, (d, z) in enumerate([(1.284, 0.035), (1.283, 0.0087),
                                                               (1.281, 0.0017)])))
    analyze_run(run, k=3, pcs=0, decode=False)
    html = (run / "analysis" / "report.html").read_text()
    assert 'id="health-warning"' in html and "latent collapsed" in html
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["training_health"].startswith("latent collapsed")
