"""The command line end to end on tiny data: train → resume → encode → decode, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hetsiren.cli import main
from hetsiren.io import read_map
from hetsiren.simulate import SimulationSpec, simulate_phantom


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sim"
    simulate_phantom(out, "discrete", 32, SimulationSpec(n_particles=64, snr=1.0, seed=2,
                                                         pixel_size_A=5.0), progress=False)
    return out / "particles.star"


def test_train_help_shows_the_papers_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "paper Eq. 7: λ1 = 1" in text and "paper: 1e-5" in text and "--paper-defaults" in text


def test_train_resume_encode_decode(star, tmp_path):
    run = tmp_path / "run"
    base = ["train", str(star), "-o", str(run), "--zdim", "2", "--device", "cpu",
            "--batch-size", "16"]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(base + ["--resume"]) == 0  # keeps the stored 1 epoch: nothing to do
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    assert main(base + ["--resume", "--epochs", "2"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]

    z_path = tmp_path / "z.npy"
    assert main(["encode", str(run), str(star), "-o", str(z_path), "--device", "cpu"]) == 0
    np.testing.assert_allclose(np.load(z_path), np.load(run / "latent.npy"), atol=1e-5)

    points = tmp_path / "points.txt"
    np.savetxt(points, np.load(z_path)[:2])
    assert main(["decode", str(run), "--z", str(points), "-o", str(tmp_path / "maps"),
                 "--device", "cpu"]) == 0
    volume, voxel = read_map(tmp_path / "maps" / "map_001.mrc")
    assert volume.shape == (32, 32, 32) and voxel == pytest.approx(5.0)


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.star"), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "missing.star" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    bad = tmp_path / "z.txt"
    bad.write_text("1 2 3\n")
    assert main(["decode", str(tmp_path), "--z", str(bad), "-o", str(tmp_path / "m")]) == 2


@pytest.fixture(scope="module")
def cropped_run(star, tmp_path_factory):
    """One epoch at a 16 px training box (the images are 32 px of 5 Å)."""
    run = tmp_path_factory.mktemp("cropped") / "run"
    assert main(["train", str(star), "-o", str(run), "--zdim", "2", "--device", "cpu",
                 "--batch-size", "16", "--epochs", "1", "--box", "16"]) == 0
    return run


def test_decode_original_size_flip_invert_and_no_overwrite(cropped_run, tmp_path, capsys):
    import torch

    from hetsiren.geometry import mirror_handedness
    from hetsiren.physics import resample_map

    points = tmp_path / "points.txt"
    np.savetxt(points, np.load(cropped_run / "latent.npy")[:2])
    base = ["decode", str(cropped_run), "--z", str(points), "--device", "cpu", "-o"]
    assert main(base + [str(tmp_path / "train")]) == 0
    small, voxel = read_map(tmp_path / "train" / "map_001.mrc")
    assert small.shape == (16,) * 3 and voxel == pytest.approx(10.0)

    assert main(base + [str(tmp_path / "full"), "--original-size"]) == 0
    full, voxel = read_map(tmp_path / "full" / "map_001.mrc")
    assert full.shape == (32,) * 3 and voxel == pytest.approx(5.0)
    # band-limited padding: cropping the spectrum back gives the training-box map
    back = resample_map(torch.from_numpy(full), 5.0, 10.0, 16).numpy()
    np.testing.assert_allclose(back, small, atol=1e-4 * np.abs(small).max())
    assert full.sum() == pytest.approx(small.sum() * 8, rel=1e-3)  # same density per volume

    assert main(base + [str(tmp_path / "flip"), "--flip", "--invert"]) == 0
    flipped, _ = read_map(tmp_path / "flip" / "map_001.mrc")
    np.testing.assert_allclose(flipped, -mirror_handedness(small), atol=1e-6)
    assert not np.allclose(flipped, -small)  # a real mirror, not a no-op

    # an existing output is not replaced without --force, and is left as it was
    before = (tmp_path / "train" / "map_000.mrc").read_bytes()
    capsys.readouterr()
    assert main(base + [str(tmp_path / "train"), "--invert"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "train" / "map_000.mrc").read_bytes() == before
    assert main(base + [str(tmp_path / "train"), "--invert", "--force"]) == 0
    np.testing.assert_allclose(read_map(tmp_path / "train" / "map_001.mrc")[0], -small)


def test_decode_lowpass_and_bfactor(cropped_run, tmp_path, capsys):
    """Internal sharpening of decoded maps: the spectrum beyond --lowpass is gone, a negative
    --bfactor raises the high shells relative to the low ones; nonsense values exit 2."""
    points = tmp_path / "points.txt"
    np.savetxt(points, np.load(cropped_run / "latent.npy")[:1])
    base = ["decode", str(cropped_run), "--z", str(points), "--device", "cpu", "-o"]
    assert main(base + [str(tmp_path / "plain")]) == 0
    plain, _ = read_map(tmp_path / "plain" / "map_000.mrc")

    def shell_power(volume):  # per-shell power of a 16 px map (10 Å/px)
        f = np.abs(np.fft.fftshift(np.fft.fftn(volume))) ** 2
        k = np.indices(volume.shape) - 8
        r = np.rint(np.sqrt((k**2).sum(0))).astype(int)
        return np.bincount(r.ravel(), f.ravel())[:9]

    assert main(base + [str(tmp_path / "low"), "--lowpass", "40"]) == 0  # shell 4 of 16 px
    low, voxel = read_map(tmp_path / "low" / "map_000.mrc")
    assert voxel == pytest.approx(10.0)
    p_plain, p_low = shell_power(plain), shell_power(low)
    assert p_low[6:].sum() < 1e-6 * p_plain[6:].sum()  # nothing left beyond the edge
    np.testing.assert_allclose(p_low[:3], p_plain[:3], rtol=1e-3)  # the low shells untouched

    assert main(base + [str(tmp_path / "sharp"), "--bfactor", "-2000"]) == 0
    p_sharp = shell_power(read_map(tmp_path / "sharp" / "map_000.mrc")[0])
    gain = p_sharp / p_plain
    assert gain[6] > gain[2] > gain[0] * 0.999

    for bad in (["--lowpass", "0"], ["--lowpass", "nan"], ["--lowpass", "12"],
                ["--bfactor", "inf"]):
        capsys.readouterr()
        assert main(base + [str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert bad[0] in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_help_texts_never_ask_for_none(capsys):
    """Nobody can type None: every command's help states what happens when an option is not
    given, in words."""
    from hetsiren.cli import _command_modules

    for name, _ in _command_modules():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "None =" not in text and "default: None" not in text, name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Not given: V0 = 0" in text and "not given: the images' own box" in text


def test_umap_hint_works_from_a_source_checkout(monkeypatch):
    import sys

    from hetsiren.analysis.landscape import embed_umap
    from hetsiren.errors import UserInputError

    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(UserInputError, match=r"pip install umap-learn"):
        embed_umap(np.zeros((10, 2), dtype=np.float32))


def test_simulate_says_what_it_does(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        simulate_phantom(tmp_path / "s", "discrete", 16, SimulationSpec(n_particles=8, seed=1,
                                                                        pixel_size_A=8.0))
    assert "simulating 8 particles of 16 px" in caplog.text


def test_train_nproc_runs_itself_through_torchrun_without_the_flag(monkeypatch, capsys):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run",
                        lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 3))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["-v", "train", "p.star", "-o", "run", "--nproc", "4", "--zdim", "8", "--nproc=4"]
    assert main(argv) == 3  # torchrun's exit status
    (cmd,) = calls
    i = cmd.index("torch.distributed.run")
    assert cmd[i + 1:i + 4] == ["--standalone", "--nproc_per_node", "4"]
    assert cmd[i + 4:] == ["-m", "hetsiren", "-v", "train", "p.star", "-o", "run", "--zdim", "8"]
    monkeypatch.setenv("RANK", "0")  # already one of torchrun's processes
    assert main(["train", "p.star", "-o", "run", "--nproc", "2"]) == 2
    assert "drop --nproc" in capsys.readouterr().err
