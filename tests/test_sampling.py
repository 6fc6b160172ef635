"""The step functions against their specification and against diffusers' own schedulers."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from drift.sampling import ddim_step_with_logprob, flow_sde_step
from drift.sampling.schedules import FlowSchedule


def _normal_log_prob(x, mean, std):
    lp = torch.distributions.Normal(mean, std).log_prob(x)
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def test_flow_noise_zero_is_euler_step():
    g = torch.Generator().manual_seed(0)
    v, x = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    out = flow_sde_step(v, x, 0.8, 0.6, noise_level=0.0)
    torch.testing.assert_close(out.prev_sample, x + v * (0.6 - 0.8), rtol=0, atol=1e-6)
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=[0.8, 0.6])
    ref = sched.step(v, sched.timesteps[0], x).prev_sample
    torch.testing.assert_close(out.prev_sample, ref, rtol=0, atol=1e-6)


def test_flow_log_prob_matches_torch_normal_with_per_sample_sigmas():
    g = torch.Generator().manual_seed(1)
    v, x = torch.randn(4, 2, 5, 5, generator=g), torch.randn(4, 2, 5, 5, generator=g)
    sigma = torch.tensor([0.9, 0.7, 0.5, 0.3]).view(-1, 1, 1, 1)
    sigma_next = sigma - 0.1
    out = flow_sde_step(v, x, sigma, sigma_next, noise_level=0.7, generator=g)
    assert out.log_prob.shape == (4,)
    torch.testing.assert_close(out.log_prob, _normal_log_prob(out.prev_sample, out.mean, out.std.expand_as(out.mean)))
    # the specified mean and std
    dt = sigma_next - sigma
    std = 0.7 * torch.sqrt(sigma / (1 - sigma))
    mean = x * (1 + std**2 * dt / (2 * sigma)) + v * (1 + std**2 * (1 - sigma) / (2 * sigma)) * dt
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.std, std * torch.sqrt(-dt))


def test_flow_sigma_one_uses_sigma_max():
    v, x = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    out = flow_sde_step(v, x, 1.0, 0.9, noise_level=0.5, sigma_max=0.9)
    assert torch.isfinite(out.mean).all() and torch.isfinite(out.log_prob).all()
    expected_std = 0.5 * math.sqrt(1.0 / (1 - 0.9)) * math.sqrt(0.1)
    assert out.std.item() == pytest.approx(expected_std, rel=1e-6)
    # default guard: sigma_next stands in for sigma_max on a schedule's first step
    torch.testing.assert_close(flow_sde_step(v, x, 1.0, 0.9, 0.5).std, out.std)


def test_flow_sampled_steps_have_specified_mean_and_std():
    n = 20000
    g = torch.Generator().manual_seed(2)
    v = torch.full((n, 1, 1, 1), 0.3)
    x = torch.full((n, 1, 1, 1), -0.2)
    out = flow_sde_step(v, x, 0.6, 0.5, noise_level=0.8, generator=g)
    emp_mean, emp_std = out.prev_sample.mean(), out.prev_sample.std()
    std = float(out.std.flatten()[0])
    assert abs(emp_mean - out.mean[0].item()) < 4 * std / math.sqrt(n)
    assert abs(emp_std - std) / std < 0.03


def test_flow_schedule_steps_follow_scheduler_sigmas():
    sched = FlowSchedule(FlowMatchEulerDiscreteScheduler(shift=3.0).config, 5)
    assert sched.sigmas[0] == pytest.approx(1.0) and sched.sigmas[-1] == 0
    assert 0 < sched.sigma_max < 1 and sched.sigma_max == pytest.approx(float(sched.sigmas[1]))
    assert [sched.tau(i) for i in range(5)] == sorted([sched.tau(i) for i in range(5)], reverse=True)


def _ddim():
    s = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False)
    s.set_timesteps(10)
    return s


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_mean_equals_diffusers_ddim(eta):
    s = _ddim()
    t = int(s.timesteps[3])
    prev_t = t - 1000 // 10
    g = torch.Generator().manual_seed(3)
    eps, x = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    out = ddim_step_with_logprob(eps, x, s.alphas_cumprod[t], s.alphas_cumprod[prev_t], eta)
    ref = s.step(eps, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
    torch.testing.assert_close(out.mean, ref, rtol=1e-5, atol=1e-5)
    if eta == 0.0:
        torch.testing.assert_close(out.prev_sample, ref, rtol=1e-5, atol=1e-5)
        assert torch.all(out.log_prob == 0)


def test_ddim_log_prob_and_sampled_statistics():
    s = _ddim()
    t = int(s.timesteps[2])
    a_t, a_prev = s.alphas_cumprod[t], s.alphas_cumprod[t - 100]
    n = 20000
    g = torch.Generator().manual_seed(4)
    eps = torch.full((n, 1, 1, 1), 0.5)
    x = torch.full((n, 1, 1, 1), 0.1)
    out = ddim_step_with_logprob(eps, x, a_t, a_prev, eta=1.0, generator=g)
    torch.testing.assert_close(out.log_prob, _normal_log_prob(out.prev_sample, out.mean, out.std.expand_as(out.mean)))
    expected_std = math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    assert float(out.std.flatten()[0]) == pytest.approx(expected_std, rel=1e-5)
    assert abs(out.prev_sample.std() - expected_std) / expected_std < 0.03
    assert abs(out.prev_sample.mean() - out.mean[0].item()) < 4 * expected_std / math.sqrt(n)


def test_scoring_a_stored_transition_reproduces_its_log_prob():
    g = torch.Generator().manual_seed(5)
    v, x = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    drawn = flow_sde_step(v, x, 0.7, 0.5, 0.7, generator=g)
    scored = flow_sde_step(v, x, 0.7, 0.5, 0.7, prev_sample=drawn.prev_sample)
    torch.testing.assert_close(scored.log_prob, drawn.log_prob, rtol=0, atol=0)
