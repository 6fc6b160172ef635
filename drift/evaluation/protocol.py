"""Alignment and diversity of a model on fixed prompts and seeds, and the identity of that
evaluation protocol: two models' figures compare only when they were measured the same way."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from drift.config import DriftConfig, SamplerSettings
from drift.data.provenance import content_digest
from drift.models.base import T2IModel
from drift.registry import EMBEDDINGS, REFERENCES
from drift.sampling.rollout import PromptNoise, sample_groups
from drift.scoring.coverage import ReferenceSet, coverage_report
from drift.scoring.diversity import diversity_report
from drift.scoring.protocols import Embedding
from drift.scoring.remote import REMOTE, term_identity
from drift.scoring.rewards import WeightedReward


@dataclass
class Evaluation:
    # alignment (mean reward), diversity, vendi; precision, recall, frechet with coverage; the same
    # as '<label>/diversity', ... in each further embedding
    metrics: dict[str, float]
    images: torch.Tensor  # (P * n, C, H, W), grouped by prompt
    prompts: list[str]
    rewards: torch.Tensor  # (P * n,)
    features: torch.Tensor  # (P * n, D) in the headline embedding
    reward_terms: dict[str, torch.Tensor]  # term -> (P * n,), unweighted


def eval_seeds(seed: int, count: int) -> torch.Tensor:
    """Fixed evaluation seeds, disjoint in practice from training seeds (drawn below 2^31)."""
    return torch.arange(count, dtype=torch.long) + (1 << 40) + seed * count


def embedding_figures(embed: Embedding, images: torch.Tensor, prompts: list[str], group_ids: torch.Tensor,
                      coverage: tuple[ReferenceSet, int] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The features of ``images`` in one embedding, and their diversity (``diversity_report``) and,
    with ``coverage`` = (reference set, k), their coverage of the real images of each prompt's class
    (``coverage_report``) in that embedding."""
    features = embed(images).cpu()
    metrics = diversity_report(features, group_ids)
    if coverage is not None:
        reference, k = coverage
        classes = [reference.classify(p) for p in prompts]
        real = {c: embed(reference.images[c]).cpu() for c in dict.fromkeys(classes)}
        metrics.update(coverage_report(features, classes, real, k))
    return features, metrics


def evaluate(model: T2IModel, reward: WeightedReward, embed: Embedding, prompts: list[str], samples_per_prompt: int,
             seed: int, sampler: SamplerSettings, *, batch_size: int = 256, progress: bool = False,
             coverage: tuple[ReferenceSet, int] | None = None, prompt_noise: PromptNoise | None = None,
             denoiser: nn.Module | None = None, embeddings: dict[str, Embedding] | None = None) -> Evaluation:
    """alignment = mean reward; diversity = per-prompt mean pairwise cosine distance of the
    embeddings, and the Vendi score, each averaged over prompts; with ``coverage`` = (reference set,
    k), the coverage of the real images of each prompt's class (``coverage_report``: precision,
    recall, Frechet distance, averaged over classes). The same figures in each of ``embeddings``
    as '<label>/diversity', ... ``prompt_noise`` is for probes of the conditioning; the evaluation
    protocol samples the clean prompts. ``denoiser`` as in ``rollout_samples``."""
    n = len(prompts) * samples_per_prompt
    ro = sample_groups(model, prompts, samples_per_prompt, eval_seeds(seed, n), sampler, prompt_noise=prompt_noise,
                       batch_size=batch_size, progress=progress, denoiser=denoiser)
    rewards, parts = reward(ro.images, ro.prompts)
    features, figures = embedding_figures(embed, ro.images, ro.prompts, ro.group_ids, coverage)
    metrics = {"alignment": float(rewards.mean()), **figures}
    for label, other in (embeddings or {}).items():
        _, figures = embedding_figures(other, ro.images, ro.prompts, ro.group_ids, coverage)
        metrics.update({f"{label}/{k}": v for k, v in figures.items()})
    metrics.update({f"reward/{k}": float(v.mean()) for k, v in parts.items()})
    return Evaluation(metrics, ro.images, ro.prompts, rewards, features, parts)


def evaluate_with_config(cfg: DriftConfig, model: T2IModel, reward: WeightedReward, embed: Embedding,
                         eval_prompts: list[str], progress: bool = False,
                         denoiser: nn.Module | None = None) -> Evaluation:
    """The run's evaluation protocol: the first eval.num_prompts held-out prompts, eval.samples_per_prompt
    seeded samples each, with the run's evaluation sampler settings. Reference, training checkpoints
    and the final model are all measured this way, so their numbers compare."""
    e = cfg.eval
    coverage = None
    if e.coverage is not None:
        coverage = reference_set(e.coverage.name, json.dumps(e.coverage.args, sort_keys=True)), e.coverage.k
    return evaluate(model, reward, embed, eval_prompts[: e.num_prompts], e.samples_per_prompt, e.seed,
                    cfg.sampler(evaluation=True), batch_size=cfg.sampling.batch_size, progress=progress,
                    coverage=coverage, denoiser=denoiser, embeddings=evaluation_embeddings(cfg))


@lru_cache(maxsize=4)
def reference_set(name: str, args_json: str) -> ReferenceSet:
    """The registered reference set, built once per (name, arguments) rather than per evaluation."""
    return REFERENCES.build(name, **json.loads(args_json))


@lru_cache(maxsize=8)
def _embedding(name: str, args_json: str, device: str) -> Embedding:
    return EMBEDDINGS.build(name, device=device, **json.loads(args_json))


def evaluation_embeddings(cfg: DriftConfig) -> dict[str, Embedding]:
    """The further embeddings of eval.embeddings by label, each built once per (name, arguments,
    device) rather than per evaluation."""
    return {label: _embedding(e.name, json.dumps(e.args, sort_keys=True), cfg.run.device)
            for label, e in cfg.eval.embeddings.items()}


def fingerprint(value):
    """A configuration value as it enters an identity (an evaluation protocol's, a benchmark run's):
    a local file or directory (a reward checkpoint, a base model) by the digest of its contents, so
    that retraining it changes the identity."""
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fingerprint(v) for v in value]
    if isinstance(value, str) and value and Path(value).exists():
        return f"sha256:{content_digest(value)[:16]}"
    return value


# The protocol specification's layout. Version 2 (this batch: evaluation embeddings, served reward
# terms, model options of the new families nested under the sampler) changed every protocol id once:
# champions registered before it are evaluated again, once, by the next run that gates against them.
PROTOCOL_VERSION = 2


def protocol_spec(cfg: DriftConfig, eval_prompts: list[str]) -> dict:
    """Everything that decides an evaluation's figures: the reward terms and weights (checkpoints by
    content, served rewards by protocol, model and version), the diversity embedding (the headline
    figures, the gate's diversity floor) and the further embeddings reported beside it, the coverage
    reference, the evaluation prompts, seeds and sample counts, and the sampler settings."""
    return {
        "version": PROTOCOL_VERSION,
        "reward": [term_identity(term) if term.name == REMOTE else fingerprint(term.model_dump(mode="json"))
                   for term in cfg.reward],
        "embedding": fingerprint(cfg.embedding.model_dump(mode="json")),
        "eval_embeddings": {label: fingerprint(e.model_dump(mode="json")) for label, e in cfg.eval.embeddings.items()},
        "coverage": fingerprint(cfg.eval.coverage.model_dump(mode="json")) if cfg.eval.coverage else None,
        "prompts": list(eval_prompts[: cfg.eval.num_prompts]),
        "samples_per_prompt": cfg.eval.samples_per_prompt,
        "seed": cfg.eval.seed,
        "sampler": cfg.sampler(evaluation=True).model_dump(mode="json"),
    }


def protocol_id(spec: dict) -> str:
    """A short digest of a protocol specification (canonical JSON)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
