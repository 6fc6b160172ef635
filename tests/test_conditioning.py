"""The adapter interface's conditioning: masks that prompt noise never touches, per-prompt lists of
embeddings (families whose prompts keep their own lengths), and the per-family hooks."""

import torch

from drift.models.base import Conditioning, T2IModel
from drift.sampling.rollout import PromptNoise, condition_noise, conditioning_at

PN = PromptNoise(scale=0.7, tau1=0.2, tau2=0.9, rescale=True, psi=0.5)


def _masked(batch=3, length=5, dim=4):
    embeds = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, 3:] = 0
    return Conditioning(embeds=embeds, pooled=torch.randn(batch, 2), mask=mask)


def _listed(lengths=(2, 5, 3), dim=4):
    gen = torch.Generator().manual_seed(1)
    return Conditioning(embeds=[torch.randn(n, dim, generator=gen) for n in lengths])


class _Hooks(T2IModel):
    """The shared adapter code with a stand-in denoiser call: no pipeline behind it. Its output is
    the pooled vector, so that guidance can be read off directly."""

    def __init__(self):
        self.device, self.denoiser = torch.device("cpu"), None

    def forward(self, denoiser, latents, model_time, cond):
        assert len(cond) == latents.shape[0]
        return cond.pooled


def test_indexing_and_concatenation_keep_masks_and_lists_aligned():
    cond = _masked()
    picked = cond[torch.tensor([2, 0])]
    assert torch.equal(picked.embeds, cond.embeds[[2, 0]]) and torch.equal(picked.mask, cond.mask[[2, 0]])
    listed = _listed()
    assert [t.shape[0] for t in listed[torch.tensor([2, 0])].embeds] == [3, 2]
    assert [t.shape[0] for t in listed[1:].embeds] == [5, 3]
    joined = Conditioning.cat([listed, listed[:1]])
    assert len(joined) == 4 and torch.equal(joined.embeds[3], listed.embeds[0])
    assert torch.equal(Conditioning.cat([cond, cond]).mask, torch.cat([cond.mask, cond.mask]))


def test_prompt_noise_leaves_the_mask_alone_and_reaches_every_content_field():
    cond = _masked()
    noise = condition_noise(cond, torch.tensor([4, 5, 6]))
    assert noise.mask is None and noise.pooled.shape == cond.pooled.shape
    noisy = conditioning_at(_Hooks(), cond, noise, 1.0, PN)
    assert noisy.mask is cond.mask
    assert not torch.allclose(noisy.embeds, cond.embeds) and not torch.allclose(noisy.pooled, cond.pooled)
    clean = conditioning_at(_Hooks(), cond, noise, 0.0, PN)  # tau <= tau1: the clean prompt
    assert torch.equal(clean.embeds, cond.embeds)


def test_per_prompt_noise_is_the_samples_own_whatever_the_batch():
    listed = _listed()
    seeds = torch.tensor([7, 8, 9])
    whole = condition_noise(listed, seeds)
    alone = condition_noise(listed[2:], seeds[2:])
    assert [t.shape for t in whole.embeds] == [t.shape for t in listed.embeds]
    assert torch.equal(whole.embeds[2], alone.embeds[0])
    noisy = conditioning_at(_Hooks(), listed, whole, 1.0, PN)
    for before, after in zip(listed.embeds, noisy.embeds):
        assert after.shape == before.shape and not torch.allclose(after, before)
    # rescale works per sample: each noisy sequence keeps its own clean mean and std
    for before, after in zip(listed.embeds, conditioning_at(_Hooks(), listed, whole, 1.0,
                                                            PromptNoise(0.7, 0.2, 0.9, rescale=True)).embeds):
        torch.testing.assert_close(after.mean(), before.mean(), rtol=0, atol=1e-5)


def test_guidance_goes_through_the_familys_hooks():
    latents = torch.zeros(2, 3)
    cond = Conditioning(embeds=[torch.ones(4, 2), torch.ones(1, 2)], pooled=torch.ones(2, 3))
    uncond = Conditioning(embeds=[torch.ones(1, 2), torch.ones(6, 2)], pooled=torch.zeros(2, 3))
    # out = out_uncond + w (out_cond - out_uncond), with per-prompt lists stacked for one pass
    assert torch.equal(_Hooks().predict(latents, 0.5, cond, uncond, 4.0), torch.full((2, 3), 4.0))
    assert torch.equal(_Hooks().predict(latents, 0.5, cond, uncond, 1.0), torch.ones(2, 3))

    class Rescaled(_Hooks):
        """Guidance rescaled to the conditional output's norm, as Qwen-Image combines it."""

        def combine_guidance(self, out_uncond, out_cond, scale):
            guided = super().combine_guidance(out_uncond, out_cond, scale)
            return guided * out_cond.norm(dim=-1, keepdim=True) / guided.norm(dim=-1, keepdim=True)

    torch.testing.assert_close(Rescaled().predict(latents, 0.5, cond, uncond, 4.0), torch.ones(2, 3))


def test_principal_noise_lies_in_the_corpus_directions_with_the_corpus_spread():
    from drift.method.prompt_noise import confine, principal_directions

    gen = torch.Generator().manual_seed(0)
    # a corpus of 400 "prompts" (4 x 3 embeddings) that differ along two directions, with stds 3 and 1
    axes = torch.linalg.qr(torch.randn(12, 2, generator=gen)).Q.T
    corpus = (torch.randn(400, 2, generator=gen) * torch.tensor([3.0, 1.0])) @ axes + 5.0
    d = principal_directions(corpus.reshape(400, 4, 3), k=2)
    assert torch.allclose((d.basis @ axes.T).abs(), torch.eye(2), atol=0.05)  # the two axes, in order
    torch.testing.assert_close(d.spread, torch.tensor([3.0, 1.0]), rtol=0.1, atol=0)
    # the same corpus in two groups far apart: centred per group, the gap between them is no direction
    shifted = corpus + torch.cat([torch.zeros(200, 12), torch.full((200, 12), 40.0)])
    grouped = principal_directions(shifted.reshape(400, 4, 3), k=2, groups=torch.arange(400) // 200)
    assert torch.allclose((grouped.basis @ axes.T).abs(), torch.eye(2), atol=0.05)
    assert principal_directions(shifted, k=1).spread[0] > 15  # without groups, the gap dominates
    n = torch.randn(20000, 4, 3, generator=gen)
    confined = confine(n, d).flatten(1)
    torch.testing.assert_close(confined, confined @ axes.T @ axes, rtol=0, atol=1e-4)  # nothing elsewhere
    torch.testing.assert_close((confined @ axes.T).std(0), torch.tensor([3.0, 1.0]), rtol=0.03, atol=0)
    # the same draw per sample whatever the batch: confined noise is the sample's own
    cond = _masked(batch=6)
    directions = {"embeds": principal_directions(torch.randn(50, 5, 4, generator=gen), 3),
                  "pooled": principal_directions(torch.randn(50, 2, generator=gen), 1)}
    whole = condition_noise(cond, torch.arange(6), directions)
    alone = condition_noise(cond[5:], torch.tensor([5]), directions)
    torch.testing.assert_close(whole.embeds[5:], alone.embeds, rtol=0, atol=1e-6)
    assert torch.linalg.matrix_rank(whole.pooled) == 1 and torch.linalg.matrix_rank(whole.embeds.flatten(1)) == 3
