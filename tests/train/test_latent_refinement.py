"""The latent refinement after training: each particle's z moved towards its own posterior
mode under the trained decoder and the run's latent prior (``refine_latent``)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from hetsiren.data import iterate_batches
from hetsiren.errors import UserInputError
from hetsiren.physics import apply_ctf, downsample
from hetsiren.rundir import CONFIG, LATENT, LATENT_PRIOR, LatentPrior, open_run
from hetsiren.train import losses as L
from hetsiren.train.config import TrainConfig
from hetsiren.train.inference import ctf_roles, encode_file, encode_particles, refine_latent


def _objective(run, z: np.ndarray) -> np.ndarray:
    """Each particle's refinement objective, written out independently: n · data / (2 ·
    data_term) + ½ Mahalanobis² to the prior, one particle at a time."""
    opened = open_run(run)
    model, prep, cfg = opened.model("cpu"), opened.preprocessing, opened.train
    prior = opened.latent_prior()
    particles = opened.particles()
    masks = L.loss_masks(prep.box, cfg.multires, "cpu")
    n_pix = float(masks[1].sum())
    precision = np.linalg.inv(prior.covariance)
    out = []
    chunks = [np.array([i]) for i in range(particles.n_particles)]
    with torch.no_grad():
        for batch in iterate_batches(particles, prep, chunks, torch.device("cpu")):
            i = int(batch.indices[0])
            target, ctf = ctf_roles(batch, prep, cfg.ctf_mode)
            plan = model.projection_plan(batch.rotations, batch.shifts_px)
            clean = model.project(model.decode_values(torch.as_tensor(z[i:i + 1])), plan)
            pred = apply_ctf(clean, ctf) if ctf is not None else clean
            data = float(L.multires_image_loss(pred, target, cfg.multires, cfg.data_loss,
                                               downsample, masks))
            dz = z[i] - prior.mean
            out.append(n_pix * data / (2 * prior.data_term) + 0.5 * dz @ precision @ dz)
    return np.array(out)


def test_refinement_lowers_every_particles_objective(tiny_run):
    encoder = encode_file(tiny_run, open_run(tiny_run).train.particles, device="cpu",
                          refine_steps=0)
    refined = np.load(tiny_run / LATENT)
    assert refined.shape == encoder.shape and np.abs(refined - encoder).max() > 1e-3
    before, after = _objective(tiny_run, encoder), _objective(tiny_run, refined)
    assert np.all(after <= before + 1e-4 * np.abs(before)), (before - after).min()
    assert np.mean(before - after) > 0


def test_refinement_does_not_depend_on_the_batch(tiny_run):
    opened = open_run(tiny_run)
    model, prep, cfg = opened.model("cpu"), opened.preprocessing, opened.train
    particles = opened.particles()
    dev = torch.device("cpu")
    z, de, ds = encode_particles(model, particles, prep, cfg, dev)
    prior = opened.latent_prior()
    runs = [refine_latent(model, particles, prep, cfg, dev, z, prior, 10, de, ds, batch_size=b)
            for b in (7, 64)]
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
    # the model is left trainable
    assert all(p.requires_grad for p in model.parameters())


def test_train_writes_the_prior_and_encode_refines_as_train_did(tiny_run):
    star = open_run(tiny_run).train.particles
    prior = open_run(tiny_run).latent_prior()
    assert (tiny_run / LATENT_PRIOR).is_file() and prior.covariance.shape == (2, 2)
    np.testing.assert_allclose(encode_file(tiny_run, star, device="cpu"),
                               np.load(tiny_run / LATENT), atol=1e-5)
    # the snapshot after the last epoch holds the encoder's latent, as every other snapshot
    encoder = encode_file(tiny_run, star, device="cpu", refine_steps=0)
    np.testing.assert_allclose(open_run(tiny_run).latent(1), encoder, atol=2e-3)
    np.testing.assert_allclose(prior.mean, encoder.mean(0), atol=1e-5)
    with pytest.raises(UserInputError, match="--refine-steps"):
        encode_file(tiny_run, star, device="cpu", refine_steps=-1)
    with pytest.raises(UserInputError, match="--refine-latent-steps"):
        TrainConfig(particles=star, refine_latent_steps=-1).validate()


def test_a_run_from_before_the_refinement_refits_its_prior(tiny_run, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    star = open_run(old).train.particles
    encoder = encode_file(old, star, device="cpu", refine_steps=0)
    # as such a run was: no prior file, no option in config.json, the encoder's latent
    (old / LATENT_PRIOR).unlink()
    record = json.loads((old / CONFIG).read_text())
    del record["config"]["refine_latent_steps"]
    (old / CONFIG).write_text(json.dumps(record))
    np.save(old / LATENT, encoder)
    opened = open_run(old)
    assert opened.train.refine_latent_steps == 0  # and its latent stays what it was
    np.testing.assert_allclose(encode_file(old, star, device="cpu"), encoder, atol=1e-5)
    refit = opened.latent_prior()
    expected = LatentPrior.fit(encoder, opened.log()[-1]["data"])
    np.testing.assert_allclose(refit.covariance, expected.covariance, rtol=1e-5)
    assert abs(refit.data_term - expected.data_term) < 1e-12
    refined = encode_file(old, star, device="cpu", refine_steps=20)
    np.testing.assert_allclose(refined, np.load(tiny_run / LATENT), atol=1e-4)
    # a run made with refinement whose prior file is gone: the encoder's latent, with a warning
    new = tmp_path / "new"
    shutil.copytree(tiny_run, new)
    (new / LATENT_PRIOR).unlink()
    with caplog.at_level(logging.WARNING):
        z = encode_file(new, star, device="cpu")
    np.testing.assert_allclose(z, encoder, atol=1e-5)
    assert "no latent prior" in caplog.text
