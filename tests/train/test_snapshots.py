"""Snapshots kept during training, one progress bar for the run, and training on a subset."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import starfile

from hetsiren.cli import main
from hetsiren.devices import resolve_device
from hetsiren.rundir import load_snapshot_latent, open_run, snapshot_epochs
from hetsiren.simulate import SimulationSpec, simulate_phantom
from hetsiren.train.config import TrainConfig
from hetsiren.train.inference import decode_latent, encode_file
from hetsiren.train.trainer import train


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    out = tmp_path_factory.mktemp("snap") / "sim"
    simulate_phantom(out, "discrete", 16, SimulationSpec(n_particles=48, snr=1.0, seed=4,
                                                         pixel_size_A=8.0), progress=False)
    return out / "particles.star"


@pytest.fixture(scope="module")
def snap_run(star, tmp_path_factory):
    run = tmp_path_factory.mktemp("snaprun") / "run"
    train(TrainConfig(particles=str(star), epochs=3, batch_size=16, zdim=2, device="cpu",
                      snapshot_every=2), run, progress=False)
    return run


def test_snapshots_every_n_epochs_and_after_the_last(snap_run, star):
    assert snapshot_epochs(snap_run) == [2, 3]
    raw = np.load(snap_run / "snapshots" / "latent.002.npy")
    assert raw.dtype == np.float16 and raw.shape == (48, 2)
    final = np.load(snap_run / "latent.npy")
    # the snapshots hold the encoder's latent; latent.npy is the refined one
    encoder = encode_file(snap_run, star, device="cpu", refine_steps=0)
    np.testing.assert_allclose(load_snapshot_latent(snap_run, 3), encoder, rtol=1e-3, atol=1e-3)
    assert np.abs(final - encoder).max() > 1e-3
    # the epoch-2 decoder is the model as it was then, not the final one
    opened, dev = open_run(snap_run), resolve_device("cpu")
    model2, model3, model3s = opened.model(dev, 2), opened.model(dev), opened.model(dev, 3)
    z = final[:2]
    maps2, maps3 = decode_latent(model2, z, dev), decode_latent(model3, z, dev)
    np.testing.assert_allclose(decode_latent(model3s, z, dev), maps3, atol=1e-6)
    assert np.abs(maps2 - maps3).max() > 1e-4 * np.abs(maps3).max()


def test_missing_snapshot_names_the_ones_there(snap_run, capsys):
    assert main(["analyze", str(snap_run), "--epoch", "1", "--no-decode"]) == 2
    assert "epochs 2, 3" in capsys.readouterr().err


def test_one_progress_bar_for_the_whole_run(star, tmp_path, capsys):
    train(TrainConfig(particles=str(star), epochs=2, batch_size=16, zdim=2, device="cpu",
                      snapshot_every=0), tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    totals = {int(t) for t in re.findall(r"epoch [12]/2:[^\r]*?\d+/(\d+) ", err)}
    assert totals == {96}  # 2 epochs x 48 particles on one bar, with its time left
    assert "96/96" in err and "img_s" not in err and "epoch 2/2" in err
    assert not (tmp_path / "run" / "snapshots").exists()


def test_train_on_a_subset_of_indices(star, tmp_path, capsys):
    picked = tmp_path / "picked.txt"
    rows = np.arange(0, 48, 2)
    picked.write_text(" ".join(map(str, rows)))
    run = tmp_path / "run"
    assert main(["train", str(star), "-o", str(run), "--indices", str(picked), "--zdim", "2",
                 "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                 "--snapshot-every", "0"]) == 0
    assert np.load(run / "latent.npy").shape == (len(rows), 2)
    record = json.loads((run / "config.json").read_text())
    subset = run / "particles_subset.star"
    assert record["config"]["particles"] == str(subset.resolve())
    assert record["config"]["extra"]["particles_source"] == str(star.resolve())
    names = starfile.read(subset, always_dict=True)["particles"]["rlnImageName"]
    original = starfile.read(star, always_dict=True)["particles"]["rlnImageName"]
    assert [n.split("@")[0] for n in names] == [original[r].split("@")[0] for r in rows]
    # export works on the subset run: its rows are the subset file's
    assert main(["export", str(run), "--indices", str(picked.parent / "first.txt"),
                 "-o", str(tmp_path / "x.star")]) == 2  # file missing: clear error
    (tmp_path / "first.txt").write_text("0 1 2\n")
    assert main(["export", str(run), "--indices", str(tmp_path / "first.txt"),
                 "-o", str(tmp_path / "x.star")]) == 0


def test_cryodrgn_pickle_indices_are_refused_with_the_conversion(star, tmp_path, capsys):
    pkl = tmp_path / "ind.pkl"
    pkl.write_bytes(pickle.dumps(np.arange(10)))
    disguised = tmp_path / "ind.txt"
    disguised.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    for path in (pkl, disguised):
        run = tmp_path / f"run_{path.suffix[1:]}"
        assert main(["train", str(star), "-o", str(run), "--indices", str(path),
                     "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "pickle" in err and "numpy.save" in err and ".npy" in err
        assert "pickle.load" not in err  # no unpickling recipe handed out
        assert len(err.strip().splitlines()) == 1
        assert not run.exists()
