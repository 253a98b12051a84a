"""Figures, map thumbnails and the ChimeraX script, on small made-up inputs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from hetsiren.analysis.chimerax import MapSeries, contour_level, write_chimerax_script
from hetsiren.analysis.plots import (
    cluster_colours,
    map_thumbnail,
    plot_fsc,
    plot_landscape,
    plot_training_curves,
)
from hetsiren.rundir import read_training_log


def _is_png(path) -> bool:
    with Image.open(path) as im:
        im.verify()
    return True


def test_cluster_colours_are_distinct():
    for k in (1, 3, 10, 20, 37):
        colours = cluster_colours(k)
        assert len(colours) == k == len(set(colours))
        assert all(c.startswith("#") and len(c) == 7 for c in colours)


def test_landscape_with_an_empty_last_cluster(tmp_path):
    coords = np.random.default_rng(0).standard_normal((50, 2))
    labels = np.zeros(50, dtype=np.int64)  # cluster 1 holds no particle
    path = plot_landscape(coords, labels, tmp_path / "l.png", representatives=np.array([0, 1]))
    assert _is_png(path)


def test_map_thumbnail_layout_and_orientation():
    vol = np.zeros((20, 20, 20), dtype=np.float32)
    vol[10, 15, 3] = 1.0  # z = centre, y high, x low
    im = Image.open(io.BytesIO(map_thumbnail(vol)))
    assert im.mode == "L"
    panel = (im.width - 8) // 3
    assert im.height == 2 * panel + 4 and panel >= 96
    a = np.asarray(im).astype(float)
    # top-left panel: projection along z, an x-y view with y pointing up → the spot is in
    # the upper-left quadrant
    top_left = a[:panel, :panel]
    y, x = np.unravel_index(top_left.argmax(), top_left.shape)
    assert y < panel / 2 and x < panel / 2
    # a constant map gives a blank (not NaN-filled) sheet
    flat = np.asarray(Image.open(io.BytesIO(map_thumbnail(np.ones((8, 8, 8))))))
    assert flat.max() <= 255 and flat[:96, :96].max() == 0


def test_fsc_and_training_figures(tmp_path):
    f = np.linspace(0.01, 0.1, 16)
    assert _is_png(plot_fsc([{"label": "a", "frequency_per_A": f, "fsc": np.exp(-f * 20)}],
                            tmp_path / "fsc.png"))
    assert plot_training_curves([], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    entries = [{"epoch": 1, "total": 2.0, "data": 1.5, "l1": None},
               {"epoch": 2, "total": 1.0, "data": 0.8, "l1": 0.1}]
    assert _is_png(plot_training_curves(entries, tmp_path / "train.png"))


def test_read_training_log_skips_a_torn_line(tmp_path):
    assert read_training_log(tmp_path) == []
    (tmp_path / "log.jsonl").write_text(json.dumps({"epoch": 1, "total": 1.0}) + "\n\n{\"ep")
    assert read_training_log(tmp_path) == [{"epoch": 1, "total": 1.0}]


def test_contour_level():
    vol = np.zeros((10, 10, 10), dtype=np.float32)
    vol[:5] = 1.0
    assert contour_level(vol) == pytest.approx(1.0)
    neg = -np.ones((4, 4, 4), dtype=np.float32)
    neg[0, 0, 0] = 2.0
    assert contour_level(neg) == pytest.approx(1.0)  # half the maximum


def test_chimerax_script(tmp_path):
    maps = []
    for sub, names in (("clusters", ["cluster_00", "cluster_01"]),
                       ("pc1", [f"pc1_{i:02d}" for i in range(12)]),
                       ("odd", ["b", "a"])):
        for n in names:
            p = tmp_path / sub / f"{n}.mrc"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"")
            maps.append(p)
    series = [MapSeries("clusters", maps[:2], 0.5, False, ["#ff0000", "#00ff00"]),
              MapSeries("pc1", maps[2:14], 0.25, True),
              MapSeries("odd", maps[14:], 0.1, True),
              MapSeries("empty", [], 1.0, True)]
    text = write_chimerax_script(tmp_path / "c.cxc", series).read_text().splitlines()
    assert text[2] == "close session"
    assert "open clusters/cluster_00.mrc" in text and "tile #1-2" in text
    assert "volume #1 color #ff0000" in text
    assert "open pc1/pc1_*.mrc vseries true" in text and "rename #3 pc1" in text
    # names that do not sort in series order are listed one by one
    assert "open odd/b.mrc odd/a.mrc vseries true" in text
    assert not any("empty" in line for line in text)


def _opened_files(script) -> list:
    """Every file the script's ``open`` lines name, resolved from the script's own folder (as
    ChimeraX resolves them); globs expanded."""
    files = []
    for line in script.read_text().splitlines():
        if line.startswith("open "):
            for word in line.split()[1:]:
                if word in ("vseries", "true"):
                    continue
                matches = sorted(script.parent.glob(word))
                assert matches, f"{word!r} matches nothing from {script.parent}"
                files += matches
    return files


@pytest.mark.parametrize("absolute", [False, True])
def test_chimerax_open_paths_resolve_from_the_scripts_folder(tmp_path, monkeypatch, absolute):
    """``make demo`` gives a relative run folder: the script must still open its maps."""
    monkeypatch.chdir(tmp_path)
    base = (tmp_path if absolute else type(tmp_path)(".")) / "demo_run" / "run" / "analysis"
    maps = [base / "clusters" / f"cluster_{i:02d}.mrc" for i in range(2)]
    maps += [base / "pc1" / f"pc1_{i:02d}.mrc" for i in range(3)]
    for p in maps:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    script = write_chimerax_script(base / "chimerax.cxc", [
        MapSeries("clusters", maps[:2], 0.5, False), MapSeries("pc1", maps[2:], 0.5, True)])
    monkeypatch.chdir("/")  # ChimeraX may be started anywhere
    script = (tmp_path / "demo_run" / "run" / "analysis" / "chimerax.cxc")
    assert sorted(_opened_files(script)) == sorted((tmp_path / p).resolve() if not absolute
                                                   else p for p in maps)
