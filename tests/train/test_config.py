"""TrainConfig: the network it builds, its checks, its persistence and resume rules."""

from __future__ import annotations

import dataclasses

import pytest

from hetsiren.errors import UserInputError
from hetsiren.model.network import NetworkConfig
from hetsiren.train.config import TrainConfig, field_help, resume_changes


def test_the_network_record_follows_the_options():
    cfg = TrainConfig(particles="p.star", zdim=6, omega0=12.0, refine_pose=True,
                      pose_decoupling=0.0, ctf_decoupling=0.0, hidden_width=None, kl_weight=0)
    net = cfg.network(32)
    assert isinstance(net, NetworkConfig)
    assert (net.box_size, net.zdim, net.hidden_width, net.omega0) == (32, 6, 6, 12.0)
    assert net.refine_pose and not net.decoupling and not net.variational
    assert TrainConfig(particles="p", kl_weight=0.1).network(16).variational
    assert TrainConfig(particles="p", ctf_decoupling=0.1, pose_decoupling=0).network(
        16).decoupling
    assert cfg.network(32, n_hidden=5).n_hidden == 5
    # the ω0 default is TrainConfig's: NetworkConfig has none of its own for it
    field = {f.name: f for f in dataclasses.fields(NetworkConfig)}["omega0"]
    assert field.default is dataclasses.MISSING
    assert TrainConfig(particles="p").network(16).omega0 == TrainConfig.omega0


@pytest.mark.parametrize("bad, flag", [({"ctf_mode": "wien"}, "--ctf-mode"),
                                       ({"data_loss": "l2"}, "--data-loss"),
                                       ({"encoder": "vit"}, "--encoder"),
                                       ({"zdim": 0}, "--zdim"),
                                       ({"lr": float("nan")}, "--lr")])
def test_validate_names_the_flag(bad, flag):
    with pytest.raises(UserInputError, match=flag):
        TrainConfig(particles="p.star", **bad).validate()
    TrainConfig(particles="p.star").validate()  # control: the defaults pass


def test_to_dict_from_dict_round_trip():
    cfg = TrainConfig(particles="p.star", multires=(1, 2, 4), extra={"n_particles": 3})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # an old record without newer fields gets today's defaults for them
    assert TrainConfig.from_dict({"particles": "p", "zdim": 4}).snapshot_every == (
        TrainConfig.snapshot_every)


def test_resume_allows_only_free_or_named_changes():
    stored = TrainConfig(particles="p.star", epochs=10)
    assert resume_changes(stored, dataclasses.replace(stored, epochs=20)) == {
        "epochs": (10, 20)}
    with pytest.raises(UserInputError, match="--allow-change lr"):
        resume_changes(stored, dataclasses.replace(stored, lr=1e-3))
    assert "lr" in resume_changes(stored, dataclasses.replace(stored, lr=1e-3), ("lr",))
    with pytest.raises(UserInputError, match="cannot change"):
        resume_changes(stored, dataclasses.replace(stored, zdim=3), ("zdim",))


def test_every_option_has_help():
    helps = field_help()
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    assert names <= set(helps) and all(helps[n] for n in names)


def test_a_record_from_before_an_option_reads_as_the_run_it_was():
    old = TrainConfig(particles="p.star").to_dict()
    del old["kl_weight"]  # recorded before the variational latent existed: deterministic
    assert TrainConfig.from_dict(old).kl_weight == 0.0
    assert not TrainConfig.from_dict(old).network(16).variational
    assert TrainConfig.from_dict(TrainConfig(particles="p").to_dict()).kl_weight == \
        TrainConfig.kl_weight  # a record that has it keeps it
