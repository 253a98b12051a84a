"""Bad input: a UserInputError naming the file and the row/column, and through the CLI one
line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hetsiren.cli import main as cli_main
from hetsiren.errors import UserInputError
from hetsiren.io import MrcStackWriter, read_map, read_particles, write_map
from hetsiren.io import mrc as mrc_module

HEADER = "data_particles\n\nloop_\n"


def _star(path: Path, columns: list[str], rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(f"_{c}\n" for c in columns) + "".join(
        r + "\n" for r in rows))
    return path


def _stack(path: Path, n: int = 3, box: int = 8) -> Path:
    with MrcStackWriter(path, box, 1.5) as w:
        w.write(np.arange(n * box * box, dtype=np.float32).reshape(n, box, box))
    return path


POSE = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]


def _cases(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """name → (file, substrings the message must contain)."""
    _stack(tmp / "s.mrcs")
    cases = {}
    f = _star(tmp / "noname.star", ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"],
              ["1 2 3"])
    cases["no_image_name"] = (f, ["noname.star", "rlnImageName"])
    f = _star(tmp / "partial_ctf.star", ["rlnImageName", "rlnDefocusV", "rlnDefocusAngle",
                                        "rlnVoltage", "rlnSphericalAberration"],
              ["1@s.mrcs 10000 0 300 2.7"])
    cases["partial_ctf"] = (f, ["partial_ctf.star", "rlnDefocusU"])
    f = _star(tmp / "partial_angles.star", ["rlnImageName", "rlnAngleRot", "rlnAnglePsi"],
              ["1@s.mrcs 1 2"])
    cases["partial_angles"] = (f, ["partial_angles.star", "rlnAngleTilt"])
    f = _star(tmp / "short.star", POSE, ["1@s.mrcs 1 2 3", "2@s.mrcs 1 2", "3@s.mrcs 1 2 3"])
    cases["short_row"] = (f, ["short.star", "row 2", "found 3 values, expected 4"])
    f = _star(tmp / "long.star", POSE, ["1@s.mrcs 1 2 3 4 5", "2@s.mrcs 1 2 3"])
    cases["long_row"] = (f, ["long.star", "could not parse", "row 1 has 6 values",
                             "expected 4"])
    f = _star(tmp / "long3.star", POSE, ["1@s.mrcs 1 2 3", "2@s.mrcs 1 2 3", "",
                                         "3@s.mrcs 1 2 3 4"])
    cases["long_later_row"] = (f, ["long3.star", "could not parse", "line 11 has 5 values",
                                   "expected 4"])
    f = _star(tmp / "nan.star", POSE, ["1@s.mrcs 1 2 3", "2@s.mrcs 1 nan 3"])
    cases["nan_tilt"] = (f, ["nan.star", "row 2", "rlnAngleTilt"])
    f = _star(tmp / "text.star", POSE, ["1@s.mrcs 1 abc 3"])
    cases["text_tilt"] = (f, ["text.star", "row 1", "rlnAngleTilt", "'abc'"])
    f = _star(tmp / "past_end.star", POSE, ["1@s.mrcs 1 2 3", "4@s.mrcs 1 2 3"])
    cases["past_end"] = (f, ["past_end.star", "row 2", "image 4", "s.mrcs", "only 3 images"])
    f = _star(tmp / "subset.star", POSE + ["rlnRandomSubset"],
              ["1@s.mrcs 1 2 3 1", "2@s.mrcs 1 2 3 3"])
    cases["bad_random_subset"] = (f, ["subset.star", "rlnRandomSubset", "particle 2",
                                      "expected 1 or 2"])
    (tmp / "fake.mrcs").write_text("this is not an MRC file\n" * 100)
    cases["not_mrc"] = (tmp / "fake.mrcs", ["fake.mrcs", "not an MRC"])
    f = _star(tmp / "to_fake.star", POSE, ["1@fake.mrcs 1 2 3"])
    cases["star_to_not_mrc"] = (f, ["fake.mrcs", "not an MRC"])
    f = _star(tmp / "bad_name.star", POSE, ["x@s.mrcs 1 2 3"])
    cases["bad_image_name"] = (f, ["bad_name.star", "row 1", "rlnImageName"])
    (tmp / "garbage.star").write_text("hello world\n")
    cases["no_block"] = (tmp / "garbage.star", ["garbage.star", "data_"])
    (tmp / "bad.cs").write_bytes(b"not numpy")
    cases["bad_cs"] = (tmp / "bad.cs", ["bad.cs", "cryoSPARC"])
    cases["missing_file"] = (tmp / "nowhere.star", ["nowhere.star", "not found"])
    cases["unknown_suffix"] = (tmp / "x.txt", ["x.txt", ".star"])
    return cases


CASES = ["no_image_name", "partial_ctf", "partial_angles", "short_row", "long_row",
         "long_later_row", "nan_tilt",
         "bad_random_subset", "text_tilt", "past_end", "not_mrc", "star_to_not_mrc",
         "bad_image_name", "no_block",
         "bad_cs", "missing_file", "unknown_suffix"]


@pytest.mark.parametrize("case", CASES)
def test_user_input_error(tmp_path, case):
    path, expected = _cases(tmp_path)[case]
    with pytest.raises(UserInputError) as info:
        read_particles(path, pixel_size_A=1.0)
    for text in expected:
        assert text in str(info.value), (text, str(info.value))


@pytest.mark.parametrize("case", CASES)
def test_cli_exit_code(tmp_path, case, capsys):
    path, expected = _cases(tmp_path)[case]
    assert cli_main(["info", str(path), "--pixel-size", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("hetsiren info: error:")
    assert expected[0] in err


def test_cli_subprocess(tmp_path):
    path, _ = _cases(tmp_path)["nan_tilt"]
    exe = Path(sys.executable).parent / "hetsiren"
    res = subprocess.run([str(exe), "info", str(path)], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "rlnAngleTilt" in res.stderr
    ok = subprocess.run([str(exe), "info", str(tmp_path / "s.mrcs"), "--json"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and '"n_particles": 3' in ok.stdout


def test_missing_stack_reported_then_raised(tmp_path, capsys):
    _stack(tmp_path / "s.mrcs")
    f = _star(tmp_path / "m.star", POSE, ["1@s.mrcs 1 2 3", "1@gone.mrcs 1 2 3"])
    p = read_particles(f)  # metadata reads fine
    assert [m.name for m in p.images.missing_stacks] == ["gone.mrcs"]
    assert p.images.read(np.array([0])).shape == (1, 8, 8)
    with pytest.raises(UserInputError, match="gone.mrcs"):
        p.images.read(np.array([1, 0]))
    with pytest.raises(UserInputError, match="gone.mrcs"):
        read_particles(f, require_images=True)
    assert cli_main(["info", str(f)]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 found" in out and "gone.mrcs" in out


def test_non_cubic_map(tmp_path):
    write_map(tmp_path / "flat.mrc", np.zeros((4, 6, 6), dtype=np.float32), 1.0)
    with pytest.raises(UserInputError, match=r"flat.mrc.*cubic"):
        read_map(tmp_path / "flat.mrc")


def test_image_order_grouping_and_lru(tmp_path, monkeypatch):
    """Random indices over many stacks come back in the order asked, with few maps open."""
    monkeypatch.setattr(mrc_module, "MMAP_CACHE_SIZE", 3)
    names, expected = [], []
    for k in range(8):
        data = np.full((4, 8, 8), k, dtype=np.float32) + np.arange(4)[:, None, None] / 10
        with MrcStackWriter(tmp_path / f"st{k}.mrcs", 8, 1.0) as w:
            w.write(data)
        for i in range(4):
            names.append(f"{i + 1}@st{k}.mrcs")
            expected.append(k + i / 10)
    f = _star(tmp_path / "many.star", ["rlnImageName"], names)
    p = read_particles(f)
    idx = np.random.default_rng(0).permutation(32)
    got = p.images.read(idx)
    np.testing.assert_allclose(got[:, 0, 0], np.asarray(expected)[idx], rtol=1e-6)
    assert len(p.images._cache) <= 3
    clone = pickle.loads(pickle.dumps(p.images))
    np.testing.assert_array_equal(clone.read(idx[:5]), got[:5])
