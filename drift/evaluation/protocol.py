"""Alignment and diversity of a model on fixed prompts and seeds, and the identity of that
evaluation protocol: two models' figures compare only when they were measured the same way."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from drift.registry import REFERENCES
from drift.scoring.coverage import ReferenceSet, coverage_report
from drift.scoring.diversity import diversity_report
from drift.models.base import T2IModel
from drift.sampling.rollout import PromptNoise, rollout


@dataclass
class Evaluation:
    metrics: dict[str, float]  # alignment (mean reward), diversity, vendi; precision, recall, frechet with coverage
    images: torch.Tensor  # (P * n, C, H, W), grouped by prompt
    prompts: list[str]
    rewards: torch.Tensor  # (P * n,)
    features: torch.Tensor  # (P * n, D)


def eval_seeds(seed: int, count: int) -> torch.Tensor:
    """Fixed evaluation seeds, disjoint in practice from training seeds (drawn below 2^31)."""
    return torch.arange(count, dtype=torch.long) + (1 << 40) + seed * count


def evaluate(model: T2IModel, reward, embed, prompts: list[str], samples_per_prompt: int, seed: int,
             num_steps: int, noise_level: float = 0.0, guidance_scale: float = 1.0, batch_size: int = 256,
             progress: bool = False, negative_prompt: str = "", reference: ReferenceSet | None = None,
             coverage_k: int = 3, prompt_noise: PromptNoise | None = None) -> Evaluation:
    """alignment = mean reward; diversity = per-prompt mean pairwise cosine distance of the
    embeddings, and the Vendi score, each averaged over prompts; with a ``reference`` set, the
    coverage of the real images of each prompt's class (``coverage_report``: precision, recall,
    Frechet distance, averaged over classes). ``prompt_noise`` is for probes of the conditioning;
    the evaluation protocol samples the clean prompts."""
    n = len(prompts) * samples_per_prompt
    ro = rollout(model, prompts, samples_per_prompt, eval_seeds(seed, n), num_steps, noise_level,
                 guidance_scale, prompt_noise=prompt_noise, batch_size=batch_size, progress=progress,
                 negative_prompt=negative_prompt)
    rewards, parts = reward(ro.images, ro.prompts)
    features = embed(ro.images).cpu()
    metrics = {"alignment": float(rewards.mean()), **diversity_report(features, ro.group_ids)}
    if reference is not None:
        classes = [reference.classify(p) for p in ro.prompts]
        real = {c: embed(reference.images[c]).cpu() for c in dict.fromkeys(classes)}
        metrics.update(coverage_report(features, classes, real, coverage_k))
    metrics.update({f"reward/{k}": float(v.mean()) for k, v in parts.items()})
    return Evaluation(metrics, ro.images, ro.prompts, rewards, features)


def evaluate_with_config(cfg, model: T2IModel, reward, embed, eval_prompts: list[str],
                         progress: bool = False) -> Evaluation:
    """The run's evaluation protocol: the first eval.num_prompts held-out prompts, eval.samples_per_prompt
    seeded samples each, with the run's sampler settings. Reference, training checkpoints and the
    final model are all measured this way, so their numbers compare."""
    e, s = cfg.eval, cfg.sampling
    reference = None if e.coverage is None else reference_set(e.coverage.name, json.dumps(e.coverage.args, sort_keys=True))
    return evaluate(model, reward, embed, eval_prompts[: e.num_prompts], e.samples_per_prompt, e.seed, s.num_steps,
                    cfg.eval_noise_level, s.guidance_scale, s.batch_size, progress, s.negative_prompt, reference,
                    e.coverage.k if e.coverage else 3)


@lru_cache(maxsize=4)
def reference_set(name: str, args_json: str) -> ReferenceSet:
    """The registered reference set, built once per (name, arguments) rather than per evaluation."""
    return REFERENCES.build(name, **json.loads(args_json))


def fingerprint(value):
    """A configuration value as it enters an identity (an evaluation protocol's, a benchmark run's):
    a local file or directory (a reward checkpoint, a base model) by the digest of its contents, so
    that retraining it changes the identity."""
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fingerprint(v) for v in value]
    if isinstance(value, str) and value and Path(value).exists():
        path = Path(value)
        files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path) if f != path else f.name).encode())
            digest.update(f.read_bytes())
        return f"sha256:{digest.hexdigest()[:16]}"
    return value


def protocol_spec(cfg, eval_prompts: list[str]) -> dict:
    """Everything that decides an evaluation's figures: the reward terms and weights (checkpoints by
    content), the diversity embedding and coverage reference, the evaluation prompts, seeds and
    sample counts, and the sampler settings."""
    s = cfg.sampling
    return {
        "reward": [fingerprint(term.model_dump(mode="json")) for term in cfg.reward],
        "embedding": fingerprint(cfg.embedding.model_dump(mode="json")),
        "coverage": fingerprint(cfg.eval.coverage.model_dump(mode="json")) if cfg.eval.coverage else None,
        "prompts": list(eval_prompts[: cfg.eval.num_prompts]),
        "samples_per_prompt": cfg.eval.samples_per_prompt,
        "seed": cfg.eval.seed,
        "sampler": {"num_steps": s.num_steps, "noise_level": cfg.eval_noise_level, "guidance_scale": s.guidance_scale,
                    "negative_prompt": s.negative_prompt, **cfg.model.adapter_options()},
    }


def protocol_id(spec: dict) -> str:
    """A short digest of a protocol specification (canonical JSON)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
