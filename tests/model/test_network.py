"""The HetSIREN networks: SIREN initialisation, meta-sinusoidal layers, encoders, pose heads."""

import math

import pytest
import torch

from hetsiren.errors import UserInputError
from hetsiren.model import (
    Decoder,
    MetaSineLayer,
    NetworkConfig,
    build_network,
    correction_matrix,
    refine_pose,
    siren_weight_bound,
)


def test_siren_bounds_follow_sitzmann():
    # First layer U(-1/n, 1/n); hidden U(-sqrt(6/n)/w0, sqrt(6/n)/w0) (Sitzmann et al., 3.2).
    assert siren_weight_bound(10, 30.0, is_first=True) == pytest.approx(1 / 10)
    assert siren_weight_bound(10, 30.0, is_first=False) == pytest.approx(math.sqrt(6 / 10) / 30)


def test_meta_layer_weights_depend_on_the_input():
    torch.manual_seed(0)
    layer = MetaSineLayer(8, 8, hyper_width=8)
    x = torch.randn(2, 8)
    w, b = layer.generate(x)
    assert w.shape == (2, 8, 8) and b.shape == (2, 8)
    assert not torch.allclose(w[0], w[1])
    y = layer(x)
    assert y.shape == (2, 8) and y.abs().max() <= 1.0


def test_hidden_meta_layer_starts_as_a_siren_layer_with_small_modulation():
    # SIREN's argument: with arcsine inputs sin(U(-pi, pi)), w0 * W x is ~N(0, 1) for the
    # hidden initialisation; the generated W(x) is that matrix plus a small x-dependent part.
    torch.manual_seed(0)
    layer = MetaSineLayer(64, 64, hyper_width=64)
    x = torch.sin(torch.empty(2048, 64).uniform_(-math.pi, math.pi))
    w, _ = layer.generate(x)
    wx = layer.omega0 * torch.bmm(w, x.unsqueeze(-1)).squeeze(-1)
    assert 0.8 < wx.std().item() < 1.25
    siren_part, modulation = w.mean(0), w - w.mean(0)
    ratio = (modulation.std() / siren_part.std()).item()
    assert 0.02 < ratio < 0.3


@pytest.mark.parametrize("activation", ["siren", "relu"])
def test_decoder_shapes_and_small_initial_delta(activation):
    torch.manual_seed(0)
    dec = Decoder(zdim=10, n_voxels=500, width=10, n_hidden=3, hyper_width=10, omega0=30.0,
                  activation=activation, delta_init_std=1e-3)
    out = dec(torch.randn(16, 10))
    assert out.shape == (16, 500)
    assert 1e-4 < out.std().item() < 1e-2
    assert len(dec.hidden) == 3


def _config(**kw) -> NetworkConfig:
    """A NetworkConfig with TrainConfig's choices spelled out (they have no default there)."""
    base = dict(box_size=32, zdim=3, encoder="conv", hidden_width=None, activation="siren",
                omega0=30.0, refine_pose=False, decoupling=False)
    return NetworkConfig(**{**base, **kw})


@pytest.mark.parametrize("encoder", ["conv", "mlp"])
@pytest.mark.parametrize("box", [32, 48])
def test_network_encodes_any_box_and_bounds_pose_corrections(encoder, box):
    torch.manual_seed(0)
    cfg = _config(box_size=box, zdim=4, encoder=encoder, refine_pose=True, decoupling=True)
    net = build_network(cfg, n_voxels=100)
    images = torch.randn(3, box, box) * 50
    z, d_euler, d_shift = net.encode(images)
    assert z.shape == (3, 4) and d_euler.shape == (3, 3) and d_shift.shape == (3, 2)
    assert d_euler.abs().max() <= cfg.max_delta_angle
    assert d_shift.abs().max() <= cfg.max_delta_shift_px
    assert net.encode_clean(images).shape == (3, 4)
    assert net.encode_ctf(images).shape == (3, 4)
    assert net.decode(z).shape == (3, 100)


def test_without_pose_refinement_corrections_are_zero():
    net = build_network(_config(box_size=32, zdim=3), n_voxels=10)
    _, d_euler, d_shift = net.encode(torch.randn(2, 32, 32))
    assert torch.count_nonzero(d_euler) == 0 and torch.count_nonzero(d_shift) == 0
    with pytest.raises(RuntimeError):
        net.encode_clean(torch.randn(2, 32, 32))


@pytest.mark.parametrize("bad", [{"zdim": 0}, {"encoder": "vit"}, {"activation": "tanh"},
                                 {"omega0": 0.0}, {"activation": "relu", "hyper_width": 4}])
def test_network_config_rejects_impossible_values(bad):
    with pytest.raises(UserInputError):
        _config(**bad).validate()


def test_correction_is_identity_at_zero_and_reaches_all_three_axes():
    eye = correction_matrix(torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(eye, torch.eye(3, dtype=torch.float64))
    # First order: small Δ turns about three independent axes (no gimbal lock at Δ = 0).
    eps = 1e-6
    axes = []
    for i in range(3):
        delta = torch.zeros(3, dtype=torch.float64)
        delta[i] = eps
        w = (correction_matrix(delta) - eye) / eps  # skew-symmetric generator
        axes.append(torch.stack([w[2, 1], w[0, 2], w[1, 0]]))
    jac = torch.stack(axes)
    torch.testing.assert_close(jac @ jac.T, torch.eye(3, dtype=torch.float64), atol=1e-5,
                               rtol=0)


def test_refine_pose_composes_on_the_left_and_adds_shifts():
    torch.manual_seed(0)
    rot = torch.linalg.qr(torch.randn(4, 3, 3, dtype=torch.float64))[0]
    rot = rot * torch.det(rot)[:, None, None]  # proper rotations
    shifts = torch.randn(4, 2, dtype=torch.float64)
    delta = torch.randn(4, 3, dtype=torch.float64) * 0.05
    d_shift = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    new_rot, new_shift = refine_pose(rot, shifts, delta, d_shift)
    torch.testing.assert_close(new_rot, correction_matrix(delta) @ rot)
    torch.testing.assert_close(new_shift, shifts + d_shift)
    new_shift.sum().backward()
    assert d_shift.grad is not None


def _normed_net(**kw):
    torch.manual_seed(0)
    return build_network(_config(box_size=32, zdim=3, latent_norm=True, **kw), 50)


def test_latent_norm_standardises_the_batch_whatever_the_encoder_scale():
    net = _normed_net()
    images = torch.randn(16, 32, 32)
    z = net.encode(images)[0]
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.pow(2).mean(), torch.tensor(1.0))
    with torch.no_grad():  # a latent head 1000x larger (or smaller) gives the same z
        net.latent_head.weight.mul_(1000.0)
        net.latent_head.bias.mul_(1000.0)
    torch.testing.assert_close(net.encode(images)[0], z, atol=1e-4, rtol=1e-4)


def test_latent_norm_keeps_proportions_and_has_no_gradient_along_the_scale():
    net = _normed_net()
    raw = torch.randn(64, 3) * torch.tensor([5.0, 1.0, 0.1])
    scale = torch.ones((), requires_grad=True)
    z = net.latent_norm(raw * scale)
    ratio = z.std(0) / raw.std(0)
    torch.testing.assert_close(ratio, ratio[0].expand(3))  # one scale for all dimensions
    # Any loss of the standardised z is flat along a common scale of the raw one: shrinking
    # z cannot lower it (the decoupling terms' trivial minimum is gone).
    (z[:, 0] * torch.arange(64.0)).sum().backward()
    assert abs(float(scale.grad)) < 1e-3


def test_latent_norm_running_statistics_come_from_the_experimental_encoder():
    net = _normed_net(decoupling=True)
    images = torch.randn(16, 32, 32) * 3
    before = net.latent_norm.running_var.clone()
    net.encode_clean(images)
    net.encode_ctf(images)
    assert torch.equal(net.latent_norm.running_var, before)
    for _ in range(200):
        z_train = net.encode(images)[0]
    net.eval()
    torch.testing.assert_close(net.encode(images)[0], z_train, atol=1e-3, rtol=1e-3)
    assert net.encode(images[:1])[0].shape == (1, 3)  # one particle: running statistics


def test_variational_latent_gives_the_mean_to_encode_and_a_small_initial_sigma():
    torch.manual_seed(0)
    net = build_network(_config(box_size=32, zdim=3, variational=True), 50)
    images = torch.randn(8, 32, 32)
    mean, logvar, _, _ = net.encode_posterior(images)
    assert logvar is not None and logvar.shape == (8, 3)
    torch.testing.assert_close(net.encode(images)[0], mean)  # encode: μ, deterministic
    # σ starts near 0.1: the decoder sees the encoder's signal from the first step
    torch.testing.assert_close(logvar.exp().sqrt().mean(), torch.tensor(0.1), rtol=0.2, atol=0)
    plain = build_network(_config(box_size=32, zdim=3), 50)
    assert plain.encode_posterior(images)[1] is None and plain.logvar_head is None


@pytest.mark.parametrize("decoupling", [False, True])
def test_feature_norm_makes_z_blind_to_the_scale_of_the_encoder_features(decoupling):
    # The encoder's ReLU layers compound a small step of each into a large change of their
    # output's scale; normalised features keep z (and σ) where the latent heads put them.
    torch.manual_seed(0)
    nets = {norm: build_network(_config(variational=True, feature_norm=norm,
                                        decoupling=decoupling), 50) for norm in (True, False)}
    images = torch.randn(8, 32, 32)
    for norm, net in nets.items():
        encoders = [net.encoder] + ([net.encoder_clean] if decoupling else [])
        before = [net.encode_posterior(images)[:2]]
        before += [(net.encode_clean(images), None)] if decoupling else []
        with torch.no_grad():  # the latent branch's last layer 10x larger: features 10x
            for encoder in encoders:
                last = [m for m in encoder.latent_branch.modules()
                        if isinstance(m, torch.nn.Linear)][-1]
                last.weight.mul_(10.0)
                last.bias.mul_(10.0)
        after = [net.encode_posterior(images)[:2]]
        after += [(net.encode_clean(images), None)] if decoupling else []
        for (z0, v0), (z1, v1) in zip(before, after, strict=True):
            if norm:
                torch.testing.assert_close(z1, z0, atol=1e-4, rtol=1e-4)
                if v0 is not None:
                    torch.testing.assert_close(v1, v0, atol=1e-4, rtol=1e-4)
            else:  # control: without it z follows the features' scale
                assert (z1 - z1.mean(0)).abs().mean() > 5 * (z0 - z0.mean(0)).abs().mean()


def test_calibrated_latent_has_the_asked_spread_whatever_the_fresh_scale():
    torch.manual_seed(0)
    net = build_network(_config(box_size=32, zdim=3), 50)
    images = torch.randn(64, 32, 32)
    with torch.no_grad():  # a fresh encoder 30x off in scale, and off-centre
        net.latent_head.weight.mul_(30.0)
        net.latent_head.bias.add_(5.0)
    raw = net.encode(images)[0]
    net.calibrate_latent(images, std=0.2)
    z = net.encode(images)[0]
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close((z - z.mean(0)).pow(2).mean().sqrt(), torch.tensor(0.2))
    # one gain for every dimension: their proportions are kept
    ratio = z.std(0) / raw.std(0)
    torch.testing.assert_close(ratio, ratio[0].expand(3))


def test_variational_log_variance_is_bounded_however_large_the_encoder_output():
    torch.manual_seed(0)
    net = build_network(_config(box_size=32, zdim=3, variational=True), 50)
    with torch.no_grad():
        net.logvar_head.bias.fill_(1e6)
    logvar = net.encode_posterior(torch.randn(4, 32, 32))[1]
    assert torch.isfinite(logvar.exp()).all() and float(logvar.detach().max()) < 2.0
