"""Denoiser interface, EDM preconditioning, schedules and samplers on analytic Gaussians."""
import math

import pytest
import torch

from potstill.diffusion import EDMPrecond, EpsAdapter, FlowAdapter, karras_sigmas, sample
from potstill.diffusion.denoiser import Denoiser

MU, S = 0.7, 0.3  # data ~ N(MU, S^2) in every coordinate


class GaussianDenoiser(Denoiser):
    """The exact posterior mean E[x0 | x0 + sigma n = x] for x0 ~ N(MU, S^2)."""

    def __init__(self, shift_per_class: float = 0.0):
        super().__init__()
        self.shift = shift_per_class

    def forward(self, x, sigma, cond=None):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        mu = MU + (0.0 if cond is None else self.shift * cond.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))))
        return mu + S ** 2 / (S ** 2 + s ** 2) * (x - mu)


def exact_flow(noise, sigma0):
    """Probability-flow ODE solved in closed form: (x - MU) / sqrt(S^2 + sigma^2) is constant."""
    return MU + S * (sigma0 * noise - MU) / math.sqrt(S ** 2 + sigma0 ** 2)


def test_karras_schedule():
    s = karras_sigmas(5, 0.002, 80.0)
    assert len(s) == 6 and s[0] == pytest.approx(80.0) and s[4] == pytest.approx(0.002) and s[5] == 0
    assert (s[:-1] > s[1:]).all()
    assert karras_sigmas(1).tolist() == [80.0, 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(0)


def test_edm_preconditioning_boundary_conditions():
    c_skip, c_out, c_in, c_noise = EDMPrecond.coefficients(torch.tensor([1e-6, 0.5, 1e6]), 0.5)
    assert c_skip[0] == pytest.approx(1.0) and c_out[0] == pytest.approx(0.0, abs=1e-5)   # D(x, 0) = x
    assert c_skip[1] == pytest.approx(0.5) and c_out[1] == pytest.approx(0.5 / math.sqrt(2))
    assert c_skip[2] == pytest.approx(0.0, abs=1e-9) and c_out[2] == pytest.approx(0.5)  # D -> sd * F
    assert (c_in * torch.tensor([1e-6, 0.5, 1e6]) ** 2 / torch.tensor([1e-6, 0.5, 1e6])).tolist()[2] == pytest.approx(1.0)
    assert c_noise[1] == pytest.approx(math.log(0.5) / 4)
    net = lambda x, c_noise, cond: torch.ones_like(x) * 3.0  # noqa: E731
    d = EDMPrecond(net)
    x = torch.randn(4, 2)
    assert torch.allclose(d(x, torch.full((4,), 1e-7)), x, atol=1e-5)
    assert torch.allclose(d(x, 1e7), torch.full_like(x, 1.5), atol=1e-4)


@pytest.mark.parametrize("method,steps,tol,order", [("heun", 100, 3e-3, 2), ("euler", 400, 1e-2, 1), ("ddim", 400, 1e-2, 1)])
def test_samplers_reproduce_the_closed_form_flow(method, steps, tol, order):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(256, 3, generator=g, dtype=torch.float64)

    def error(n):
        out = sample(GaussianDenoiser(), noise, karras_sigmas(n, 0.002, 80.0), method)
        assert out.nfe == (2 * n - 1 if method == "heun" else n)
        return (out.x - exact_flow(noise, 80.0)).abs().max().item()

    assert error(steps) < tol
    # the error shrinks at the method's order: 4x the steps -> ~4^order smaller (allow slack)
    assert error(steps // 4) / error(steps) > 0.6 * 4 ** order


def test_ddim_eta0_is_euler_and_ancestral_gives_the_data_distribution():
    noise = torch.randn(64, 2, dtype=torch.float64)
    sig = karras_sigmas(10)
    assert torch.allclose(sample(GaussianDenoiser(), noise, sig, "euler").x, sample(GaussianDenoiser(), noise, sig, "ddim").x)
    g = torch.Generator().manual_seed(1)
    big = torch.randn(20000, 1, generator=g, dtype=torch.float64)
    x = sample(GaussianDenoiser(), big, karras_sigmas(200), "ddim", eta=1.0, generator=g).x
    assert x.mean().item() == pytest.approx(MU, abs=0.01) and x.std().item() == pytest.approx(S, abs=0.01)


def test_classifier_free_guidance_and_nfe():
    d = GaussianDenoiser(shift_per_class=1.0)
    noise = torch.randn(8, 2, dtype=torch.float64)
    cond = torch.ones(8, dtype=torch.long)
    sig = karras_sigmas(4)
    plain = sample(d, noise, sig, "euler", cond=cond)
    same = sample(d, noise, sig, "euler", cond=cond, guidance=1.0, uncond=0)
    assert torch.equal(plain.x, same.x) and plain.nfe == 4
    guided = sample(d, noise, sig, "euler", cond=cond, guidance=2.0, uncond=0)
    assert guided.nfe == 8
    # w = 2 extrapolates the class shift: the mean moves twice as far from the unconditional one
    unc = sample(d, noise, sig, "euler", cond=torch.zeros(8, dtype=torch.long))
    assert torch.allclose(guided.x - unc.x, 2 * (plain.x - unc.x), atol=1e-6)
    with pytest.raises(ValueError, match="uncond"):
        sample(d, noise, sig, "euler", cond=cond, guidance=2.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(d, noise, sig, "rk4")


def test_eps_v_and_flow_adapters_agree_with_the_exact_denoiser():
    exact = GaussianDenoiser()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    table = ((1 - ab) / ab).sqrt()

    def eps_model(x_t, t, cond):
        sig = torch.exp(torch.lerp(table.log()[t.floor().long()], table.log()[t.ceil().long()], t - t.floor()))
        sig = sig.reshape(-1, 1)
        x = x_t * (1 + sig ** 2).sqrt()
        return (x - exact(x, sig.flatten())) / sig

    def v_model(x_t, t, cond):
        sig = torch.exp(torch.lerp(table.log()[t.floor().long()], table.log()[t.ceil().long()], t - t.floor())).reshape(-1, 1)
        a, b = 1 / (1 + sig ** 2).sqrt(), sig / (1 + sig ** 2).sqrt()
        x = x_t / a
        x0 = exact(x, sig.flatten())
        return a * eps_model(x_t, t, cond) - b * x0

    def flow_model(x_t, t, cond):
        t = t.reshape(-1, 1)
        sig = t / (1 - t)
        x = x_t * (1 + sig)
        x0 = exact(x, sig.flatten())
        return (x - x0) / sig - x0  # v = eps - x0

    x = torch.randn(5, 1, dtype=torch.float64)
    for sigma in (0.05, 0.7, 3.0, 40.0):
        s = torch.full((5,), sigma, dtype=torch.float64)
        want = exact(x, s)
        assert torch.allclose(EpsAdapter(eps_model, ab)(x, s), want, atol=1e-6)
        assert torch.allclose(EpsAdapter(v_model, ab, prediction="v")(x, s), want, atol=1e-6)
        assert torch.allclose(FlowAdapter(flow_model)(x, s), want, atol=1e-6)
    assert EpsAdapter(eps_model, ab).t_of_sigma(table[[0, 500, 999]]).tolist() == pytest.approx([0, 500, 999], abs=1e-6)


def test_a_local_diffusers_unet_becomes_a_denoiser(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from potstill.diffusion import from_diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(tmp_path / "m")
    sched = diffusers.DDPMScheduler(num_train_timesteps=100)
    sched.save_pretrained(tmp_path / "m" / "scheduler")
    d = from_diffusers(str(tmp_path / "m"))
    x = torch.randn(2, 1, 8, 8)
    ab = sched.alphas_cumprod
    s = float(((1 - ab[40]) / ab[40]).sqrt())
    with torch.no_grad():
        eps = unet(x * (1 + s ** 2) ** -0.5, torch.tensor([40.0, 40.0])).sample
        assert torch.allclose(d(x, torch.full((2,), s)), x - s * eps, atol=1e-4)   # x0 = x - sigma * eps
        assert torch.allclose(d(x, torch.full((2,), d.sigma_min)), x, atol=0.05)    # tiny noise: D ~ x
    out = sample(d, torch.randn(2, 1, 8, 8), karras_sigmas(3, d.sigma_min, d.sigma_max), "euler")
    assert out.x.shape == (2, 1, 8, 8) and out.nfe == 3 and torch.isfinite(out.x).all()


def test_strided_sigmas_take_dmd2_timesteps_on_the_karras_grid():
    from potstill.diffusion import karras_sigmas, plan_sigmas, strided_sigmas

    grid = karras_sigmas(1000)
    s = strided_sigmas(4)
    assert torch.equal(s, torch.stack([grid[0], grid[250], grid[500], grid[750], grid.new_zeros(())]))
    assert s[-2] > 0.1 and s[1] > 10          # not a step wasted on a nearly clean image
    assert torch.equal(strided_sigmas(1), torch.tensor([80.0, 0.0], dtype=torch.float64))
    assert torch.equal(plan_sigmas({"steps": 4, "schedule": "strided"}), s)
    assert torch.equal(plan_sigmas({"steps": 2, "sigma_max": 80.0}), karras_sigmas(2))   # old plans: Karras
    with pytest.raises(ValueError, match="unknown schedule"):
        plan_sigmas({"schedule": "cosine"})
