"""Every map input through one checked reader; image finiteness checked where images are
read; pixel sizes and duplicate rows; the RELION 3.0 optics-group count (issue 12, defects 3,
5, 7, 10 and 11)."""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from hetsiren.cli import main
from hetsiren.errors import UserInputError
from hetsiren.io import describe_particles, read_map, read_particles, write_map
from hetsiren.io.star import write_new_star


def _raw_map(path, data, voxel=None):
    """A map written as other tools do: mrcfile.new leaves the voxel size 0 unless told."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        if voxel is not None:
            mrc.voxel_size = voxel
    return path


def _blob(box=16):
    axis = np.arange(box) - box // 2
    r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
    return (r2 < (box // 4) ** 2).astype(np.float32)


@pytest.mark.parametrize("case, data, voxel, message", [
    ("voxel 0", _blob(), None, "voxel size of 0 Å; expected a positive value"),
    ("voxel -1", _blob(), -1.0, "voxel size of -1 Å"),
    ("zeros", np.zeros((16, 16, 16)), 5.0, "is empty: every voxel is 0"),
    ("constant", np.full((16, 16, 16), 3.0), 5.0, "is empty: every voxel is 3"),
    ("nan", np.where(_blob() > 0, np.nan, 0), 5.0, "NaN or Inf values (first at voxel"),
    ("2D", _blob()[:1], 5.0, "single 2D image"),
    ("not cubic", _blob()[:8], 5.0, "expected a cubic mask"),
])
def test_read_map_refuses_unusable_maps(tmp_path, case, data, voxel, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns about the NaN case
        path = _raw_map(tmp_path / "m.mrc", data, voxel)
    with pytest.raises(UserInputError, match=re.escape(message)) as info:
        read_map(path, "mask")
    assert str(path) in str(info.value)


def test_read_map_accepts_a_good_map(tmp_path):
    volume, voxel = read_map(write_map(tmp_path / "ok.mrc", _blob(), 2.5))
    assert voxel == pytest.approx(2.5) and volume.sum() == _blob().sum()


def test_train_refuses_bad_ref_and_mask(tiny_dataset, tmp_path, capsys):
    # Before: a --ref of voxel size 0 trained on one non-zero voxel (rc 0); a mask of zeros,
    # negative or of voxel size 0 ended in an IndexError traceback.
    star = str(tiny_dataset / "particles.star")
    cases = {
        "--ref": (_raw_map(tmp_path / "ref0.mrc", _blob()), "voxel size of 0 Å"),
        "--mask": (_raw_map(tmp_path / "zeros.mrc", np.zeros((16, 16, 16)), 5.0), "is empty"),
    }
    negative = _raw_map(tmp_path / "neg.mrc", -_blob(), 5.0)
    mask0 = _raw_map(tmp_path / "mask0.mrc", _blob())
    runs = [(["--ref", str(cases["--ref"][0])], cases["--ref"][1]),
            (["--mask", str(cases["--mask"][0])], cases["--mask"][1]),
            (["--mask", str(negative)], "no voxel of the mask is above 0.5"),
            (["--mask", str(mask0)], "voxel size of 0 Å")]
    for i, (extra, message) in enumerate(runs):
        run = tmp_path / f"run{i}"
        assert main(["train", star, "-o", str(run), "--device", "cpu", *extra]) == 2
        assert message in capsys.readouterr().err
        assert not run.exists()


def test_cs_pixel_size_must_be_positive(formats_dir, tmp_path):
    # Before: blob/psize_A -1 trained, 0 ended in "loss became nan ... try a lower --lr".
    arr = np.load(formats_dir / "cryosparc_P12_J24_001_particles.cs")
    for value in (-1.0, 0.0, np.nan):
        bad = arr.copy()
        bad["blob/psize_A"][5] = value
        path = tmp_path / "bad.cs"
        with open(path, "wb") as fh:
            np.save(fh, bad)
        with pytest.raises(UserInputError, match=r"row 6, field blob/psize_A: "):
            read_particles(path)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
@pytest.fixture
def nan_dataset(tiny_dataset, tmp_path):
    """tiny_dataset with one NaN pixel in particle 7."""
    out = tmp_path / "nan"
    shutil.copytree(tiny_dataset, out)
    with mrcfile.open(out / "particles.mrcs", "r+") as mrc:
        mrc.data[6, 8, 8] = np.nan
    return out


def test_a_nan_pixel_is_named_where_images_are_read(nan_dataset):
    particles = read_particles(nan_dataset / "particles.star")
    assert particles.images.read(np.array([0, 1, 5])).shape == (3, 16, 16)
    with pytest.raises(UserInputError, match=r"particles.mrcs: image 7 \(particle 7 of "
                                             r".*particles.star\) has 1 NaN or Inf pixels"):
        particles.images.read(np.array([0, 6]))


def test_train_and_encode_name_the_nan_particle(nan_dataset, tiny_run, tmp_path, capsys):
    # Before: train said "loss became nan ... last good checkpoint (epoch 0) ... lower --lr";
    # encode wrote NaN latent rows (rc 0).
    star = str(nan_dataset / "particles.star")
    assert main(["train", star, "-o", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "image 7 (particle 7" in err and "checkpoint" not in err and "--lr" not in err
    assert not (tmp_path / "run").exists()
    assert main(["encode", str(tiny_run), star, "-o", str(tmp_path / "z.npy"),
                 "--device", "cpu"]) == 2
    assert "image 7 (particle 7" in capsys.readouterr().err
    assert not (tmp_path / "z.npy").exists()


def test_duplicate_particles_are_reported(tiny_dataset, tmp_path, caplog):
    particles = read_particles(tiny_dataset / "particles.star")
    names = [f"{i % 60 + 1:06d}@{tiny_dataset / 'particles.mrcs'}" for i in range(64)]
    path = write_new_star(tmp_path / "dup.star", image_names=names, pixel_size_A=5.0,
                          box_size=16, rotations=particles.rotations,
                          shifts_A=particles.shifts_A, ctf=particles.ctf)
    with caplog.at_level(logging.WARNING):
        read_particles(path)
    assert "4 rows refer to an image another row already uses (e.g. rows 1 and 61" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_particles(tiny_dataset / "particles.star")
    assert "already uses" not in caplog.text


def test_relion30_unknown_pixel_size_is_one_optics_group(tmp_path):
    # Before: 1,000 identical rows whose stack is not found were 1,000 optics groups (the
    # unknown pixel size is NaN and NaN never equals NaN); with the stack found, 1 group.
    toy = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "more" / "toy.star"
    if not toy.is_file():
        pytest.skip(f"{toy} not found")
    info = describe_particles(toy)
    assert info["stacks_found"] == 0
    assert len(info["optics_groups"]) == 1
    group = info["optics_groups"][0]
    assert group["n_particles"] == 1000 and group["pixel_size_A"] is None
    assert group["voltage_kv"] == 300
