"""``hetsiren reconstruct`` then ``hetsiren postprocess`` on the conformance set (500 noise-free
projections of map.mrc made outside this project, STAR and .cs), and their bad inputs."""

from __future__ import annotations

import json
import math

import mrcfile
import numpy as np
import pytest

from hetsiren.cli import main as cli
from hetsiren.physics import fsc


@pytest.fixture(scope="module")
def reconstructed(conformance_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec")
    assert cli(["reconstruct", str(conformance_dir / "particles.star"), "-o",
                str(out / "star.mrc"), "--half-maps", "--device", "cpu"]) == 0
    assert cli(["reconstruct", str(conformance_dir / "particles.cs"), "-o",
                str(out / "cs.mrc"), "--device", "cpu"]) == 0
    return out


def test_reconstruct_star_and_cs_give_the_map_back(reconstructed, conformance_dir, capsys):
    truth = mrcfile.read(conformance_dir / "map.mrc")
    maps = {n: mrcfile.read(reconstructed / f"{n}.mrc") for n in ("star", "cs")}
    for name, vol in maps.items():
        curve = fsc(vol, truth, 1.0).fsc
        print(name, "FSC vs map.mrc min over shells 1..25:", curve[:25].min())
        assert curve[:25].min() > 0.95  # cryoDRGN reaches ≥ 0.93 in every shell (README)
    # the two files describe the same particles: the same map
    np.testing.assert_allclose(maps["star"], maps["cs"], atol=2e-3 * np.abs(maps["star"]).max())
    for n in (1, 2):
        assert (reconstructed / f"star_half{n}.mrc").is_file()
    assert not (reconstructed / "cs_half1.mrc").exists()


def test_postprocess_writes_maps_plots_and_json(reconstructed, tmp_path, capsys):
    out = tmp_path / "post"
    assert cli(["postprocess", str(reconstructed / "star_half1.mrc"),
                str(reconstructed / "star_half2.mrc"), "-o", str(out), "--local-step", "4"]) == 0
    printed = capsys.readouterr().out
    for name in ("postprocess.mrc", "postprocess_masked.mrc", "mask.mrc", "locres.mrc"):
        with mrcfile.open(out / name) as f:
            assert f.data.shape == (64, 64, 64) and np.isfinite(f.data).all()
            assert float(f.voxel_size.x) == pytest.approx(1.0)
    for png in ("fsc.png", "guinier.png", "locres.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "postprocess.json").read_text())
    assert "resolution_0.143_A" in printed
    assert math.isfinite(info["bfactor_A2"])
    # noise-free halves: both resolutions at (or within a shell of) Nyquist, 2 Å
    assert 2.0 <= info["resolution_0.143_A"] <= 64 / 31
    assert 2.0 <= info["unmasked_resolution_0.143_A"] <= 64 / 31
    locres = mrcfile.read(out / "locres.mrc")
    mask = mrcfile.read(out / "mask.mrc")
    assert locres[mask > 0.5].min() >= 2.0 - 1e-6 and (locres[mask <= 0.5] == 0).all()


def test_postprocess_bad_inputs_exit_2(reconstructed, tmp_path, capsys):
    half1 = str(reconstructed / "star_half1.mrc")
    small = tmp_path / "small.mrc"
    with mrcfile.new(small) as f:
        f.set_data(np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32))
        f.voxel_size = 2.0  # a valid map, only of another size than the first half
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [
        ([half1, str(small), "-o", str(tmp_path / "a")], "differs"),
        ([half1, str(tmp_path / "none.mrc"), "-o", str(tmp_path / "b")], "not found"),
        ([half1, half1, "-o", str(full)], "not an empty folder"),
        ([half1, half1, "-o", str(tmp_path / "c"), "--local-window", "7"], "--local-window"),
    ]
    for args, match in cases:
        assert cli(["postprocess", *args]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_reconstruct_refuses_to_overwrite_its_input(conformance_dir, tmp_path, capsys):
    star = tmp_path / "p.mrc"
    star.write_text("")
    assert cli(["reconstruct", str(star), "-o", str(star)]) == 2
    assert "overwrite" in capsys.readouterr().err
