"""The promotion gate compares like with like: one evaluation protocol, figure by figure."""

import math

import pytest

from drift.config import RegistrySection, parse_config
from drift.evaluation.promotion import promotion_decision, reward_head_decision
from drift.evaluation.protocol import protocol_id, protocol_spec

REFERENCE = {"alignment": 5.0, "diversity": 0.08}
RULE = RegistrySection()


def figures(digit, preference=None, diversity=0.06):
    out = {"reward/digit_margin": digit, "diversity": diversity}
    if preference is not None:
        out["reward/preference"] = preference
    out["alignment"] = digit + (preference or 0.0)
    return out


def test_an_extra_reward_term_does_not_buy_a_promotion():
    # Both measured under the challenger's protocol (digit margin + preference score): the
    # candidate's total is higher only because of the preference term; on the champion's own
    # term it is worse.
    candidate, champion = figures(7.0, 16.7), figures(7.3, 5.0)
    promote, reason = promotion_decision(candidate, champion, REFERENCE, RULE, champion_terms=["digit_margin"])
    assert not promote
    assert "digit_margin regressed" in reason
    assert "reward/digit_margin 7 vs 7.3 (-0.3)" in reason and "reward/preference 16.7 vs 5 (+11.7)" in reason
    promote, reason = promotion_decision(figures(7.4, 16.7), champion, REFERENCE, RULE, champion_terms=["digit_margin"])
    assert promote and "reward/digit_margin 7.4 vs 7.3 (+0.1)" in reason


def test_the_rule_is_configuration():
    candidate, champion = figures(7.2, 16.7), figures(7.3, 5.0)
    lenient = RegistrySection(max_term_drop=0.2)
    assert promotion_decision(candidate, champion, REFERENCE, lenient, champion_terms=["digit_margin"])[0]
    unprotected = RegistrySection(protected_terms=[])
    assert promotion_decision(candidate, champion, REFERENCE, unprotected, champion_terms=["digit_margin"])[0]
    assert not promotion_decision(figures(7.0), figures(7.3), REFERENCE, RULE)[0]
    assert promotion_decision(figures(7.0), figures(7.3), REFERENCE, RegistrySection(max_alignment_drop=0.5))[0]


@pytest.mark.parametrize("who", ["candidate", "champion", "reference"])
def test_every_compared_figure_must_be_finite(who):
    models = {"candidate": figures(7.0), "champion": figures(6.0), "reference": dict(REFERENCE)}
    models[who]["diversity"] = math.nan
    promote, reason = promotion_decision(models["candidate"], models["champion"], models["reference"], RULE)
    assert not promote and f"{who}: diversity" in reason


def test_a_nan_reward_head_accuracy_is_never_registered():
    assert not reward_head_decision(math.nan, None)[0]
    assert not reward_head_decision(math.nan, 0.7)[0]
    assert reward_head_decision(0.8, math.nan)[0] and not reward_head_decision(0.6, 0.7)[0]


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
                   {"embedding.name": "digit_encoder"}, {"eval.embeddings": {"pixels": {"name": "pixels"}}}):
        assert protocol_id(protocol_spec(base.with_overrides(change), prompts)) != pid, change
    (checkpoint / "model.safetensors").write_bytes(b"weights v2")  # a retrained reward model
    assert protocol_id(protocol_spec(base, prompts)) != pid
