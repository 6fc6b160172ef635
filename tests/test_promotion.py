"""The promotion gates compare like with like (one evaluation protocol, sample by sample) and know
evaluation noise: a tie or a difference within it keeps the champion."""

import math

import numpy as np
import pytest

from drift.config import RegistrySection, parse_config
from drift.evaluation.promotion import promotion_decision, reward_head_decision
from drift.evaluation.protocol import protocol_id, protocol_spec
from drift.evaluation.scores import SampleScores

REFERENCE = {"alignment": 5.0, "diversity": 0.08}
RULE = RegistrySection()
PROMPTS, N = 10, 8


def scores(digit, preference=None, diversity=0.06, noise=1.0, seed=0, protocol="p"):
    """Scores of a model whose samples' digit margin is ``digit`` plus noise that depends on the
    prompt and seed (shared by models measured on the same ones) and on the model (``seed``)."""
    shared = np.random.default_rng(1000).normal(0, 2.0, PROMPTS * N)  # the prompt and seed's own difficulty
    own = np.random.default_rng(seed).normal(0, noise, (3, PROMPTS * N))
    per_sample = {"reward/digit_margin": (digit + shared + own[0]).tolist()}
    total = per_sample["reward/digit_margin"]
    if preference is not None:
        per_sample["reward/preference"] = (preference + own[1]).tolist()
        total = (np.array(total) + np.array(per_sample["reward/preference"])).tolist()
    div = diversity + 0.01 * own[2][:PROMPTS] * noise
    return SampleScores(protocol_id=protocol, prompts=[f"prompt {i}" for i in range(PROMPTS)], samples_per_prompt=N,
                        per_sample={"alignment": total, **per_sample},
                        per_prompt={"diversity": div.tolist(), "vendi": (div * 50).tolist()})


def test_a_tie_or_a_difference_within_the_noise_keeps_the_champion():
    champion = scores(7.0, seed=1)
    promote, reason = promotion_decision(champion, champion, REFERENCE, RULE, ["digit_margin"])
    assert not promote and "the champion stays" in reason  # the same model registered again
    rerun = scores(7.0, seed=2)  # the same training measured again: other noise, no real change
    promote, reason = promotion_decision(rerun, champion, REFERENCE, RULE, ["digit_margin"])
    assert not promote, reason
    better = scores(9.0, seed=3)
    promote, reason = promotion_decision(better, champion, REFERENCE, RULE, ["digit_margin"])
    assert promote and reason.startswith("promoted over the champion: better alignment"), reason
    assert "alignment 9.1" in reason and "90% interval [+" in reason, reason  # the interval is in the reason


def test_an_extra_reward_term_does_not_buy_a_promotion():
    # Both measured under the challenger's protocol (digit margin + preference score): the
    # candidate's total is higher only because of the preference term; on the champion's own
    # term it is worse.
    candidate, champion = scores(6.5, 16.7, seed=1), scores(7.3, 5.0, seed=2)
    promote, reason = promotion_decision(candidate, champion, REFERENCE, RULE, champion_terms=["digit_margin"])
    assert not promote
    assert "digit_margin regressed against the champion's" in reason, reason
    assert "reward/preference 16.57 vs 4.98 (+11.6, 90% interval [+11.3, +11.9])" in reason, reason
    promote, reason = promotion_decision(scores(7.5, 16.7, seed=1), champion, REFERENCE, RULE,
                                         champion_terms=["digit_margin"])
    assert promote, reason


def test_the_rule_is_configuration():
    candidate, champion = scores(6.9, 16.7, seed=1), scores(7.3, 5.0, seed=2)
    assert not promotion_decision(candidate, champion, REFERENCE, RULE, champion_terms=["digit_margin"])[0]
    lenient = RegistrySection(max_term_drop=1.0)
    assert promotion_decision(candidate, champion, REFERENCE, lenient, champion_terms=["digit_margin"])[0]
    unprotected = RegistrySection(protected_terms=[])
    assert promotion_decision(candidate, champion, REFERENCE, unprotected, champion_terms=["digit_margin"])[0]
    # better alignment by a margin: +2 is enough for a margin of 1, not for 3
    better, base = scores(9.0, seed=1), scores(7.0, seed=2)
    assert promotion_decision(better, base, REFERENCE, RegistrySection(min_alignment_gain=1.0))[0]
    assert not promotion_decision(better, base, REFERENCE, RegistrySection(min_alignment_gain=3.0))[0]
    # more diverse at an alignment within the noise of the champion's: promoted; at a lower one, only
    # with an allowed alignment drop
    assert promotion_decision(scores(6.9, diversity=0.09, seed=1), base, REFERENCE, RULE)[0]
    diverse = scores(6.0, diversity=0.09, seed=1)
    assert not promotion_decision(diverse, base, REFERENCE, RULE)[0]
    promote, reason = promotion_decision(diverse, base, REFERENCE, RegistrySection(max_alignment_drop=1.5))
    assert promote and "better diversity" in reason, reason


@pytest.mark.parametrize("who", ["candidate", "champion", "reference"])
def test_every_compared_figure_must_be_finite(who):
    models = {"candidate": scores(9.0), "champion": scores(6.0, seed=1), "reference": dict(REFERENCE)}
    if who == "reference":
        models[who]["diversity"] = math.nan
    else:
        div = list(models[who].per_prompt["diversity"])
        div[3] = math.nan
        models[who] = models[who].model_copy(update={"per_prompt": {**models[who].per_prompt, "diversity": div}})
    promote, reason = promotion_decision(models["candidate"], models["champion"], models["reference"], RULE)
    assert not promote and f"{who}: diversity" in reason


def test_scores_of_other_protocols_are_not_compared():
    with pytest.raises(ValueError, match="do not pair up"):
        promotion_decision(scores(9.0), scores(6.0, protocol="q"), REFERENCE, RULE)
    with pytest.raises(ValueError, match="values for 80 samples"):
        SampleScores(protocol_id="p", prompts=["a"] * PROMPTS, samples_per_prompt=N, per_sample={"alignment": [1.0]},
                     per_prompt={})


def test_the_reward_head_gate_knows_noise_too():
    rng = np.random.default_rng(0)
    pairs = np.repeat(np.arange(40), 2)  # two raters per held-out pair
    champion = (rng.random(80) < 0.8).astype(float)
    assert not reward_head_decision(np.array([]), None, pairs[:0], 0.9, 2000)[0]
    assert reward_head_decision(champion, None, pairs, 0.9, 2000)[0]
    accept, reason = reward_head_decision(champion, champion, pairs, 0.9, 2000)
    assert not accept and "not more accurate than the champion" in reason  # equal accuracy keeps the champion
    slightly = champion.copy()
    slightly[np.flatnonzero(champion == 0)[:2]] = 1  # 2 more right of 80: within the noise
    assert not reward_head_decision(slightly, champion, pairs, 0.9, 2000)[0]
    clearly = np.ones(80)
    accept, reason = reward_head_decision(clearly, champion, pairs, 0.9, 2000)
    assert accept and "interval [+" in reason, reason


def test_the_protocol_identity_follows_what_decides_the_figures(tmp_path):
    checkpoint = tmp_path / "clf"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights v1")
    base = parse_config({"model": {"source": "m"}, "data": {"prompts": "p.csv"},
                         "reward": [{"name": "digit_margin", "args": {"checkpoint": str(checkpoint)}}]})
    prompts = [f"prompt {i}" for i in range(20)]
    pid = protocol_id(protocol_spec(base, prompts))
    same = [base.with_overrides({"train.iterations": 99, "train.lr": 0.1, "drift.shaping.enabled": True})]
    for cfg in same:
        assert protocol_id(protocol_spec(cfg, prompts)) == pid
    assert protocol_id(protocol_spec(base, prompts[::-1])) != pid
    for change in ({"eval.seed": 7}, {"eval.samples_per_prompt": 8}, {"sampling.num_steps": 20},
                   {"eval.noise_level": 0.0}, {"reward": [{"name": "digit_margin", "weight": 2.0,
                                                           "args": {"checkpoint": str(checkpoint)}}]},
                   {"embedding.name": "digit_encoder"}, {"eval.embeddings": {"pixels": {"name": "pixels"}}},
                   {"model.max_sequence_length": 128}, {"model.cfg_truncation": 0.5}):
        assert protocol_id(protocol_spec(base.with_overrides(change), prompts)) != pid, change
    (checkpoint / "model.safetensors").write_bytes(b"weights v2")  # a retrained reward model
    assert protocol_id(protocol_spec(base, prompts)) != pid
