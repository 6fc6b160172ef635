"""GRPO / DRIFT fine-tuning loop. All training state lives here; the math lives in the
small modules it calls (rollout, subset, prompt_noise, shaping, grpo).

One iteration: sample P prompts x G seeds -> rollout with log-probs -> rewards and embeddings ->
optional diversity shaping -> optional reward-concentrated subset -> group-normalised advantages
-> PPO-clipped updates on a fraction of the timesteps of each kept sample.

Randomness is a function of (run seed, iteration): prompts, sample seeds and the timesteps trained
are drawn from generators seeded with both, so resuming from a checkpoint replays the same run.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers.training_utils import EMAModel, cast_training_params
from safetensors.torch import load_file, save_file

from drift import distributed as dist
from drift import shaping as shp
from drift.config import DriftConfig
from drift.diversity import diversity_report
from drift.evaluation import evaluate_with_config
from drift.grpo import clipped_policy_loss, mean_kl
from drift.models.base import T2IModel
from drift.prompt_noise import noise_scale
from drift.rollout import (PromptNoise, Rollout, condition_noise, conditioning_at, expand_groups,
                           rollout_samples)
from drift.subset import group_advantages, select_subset

MetricsCallback = Callable[[dict[str, float], int], None]


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


class Trainer:
    def __init__(self, config: DriftConfig, model: T2IModel, reward, embed, train_prompts: list[str],
                 eval_prompts: list[str] | None = None):
        if not train_prompts:
            raise ValueError("no training prompts")
        self.cfg = config
        self.model = model
        self.reward = reward
        self.embed = embed
        self.train_prompts = list(train_prompts)
        self.eval_prompts = list(eval_prompts or [])
        self.iteration = 0
        self.trajectory: list[dict[str, float]] = []
        tcfg = config.train
        torch.manual_seed(config.run.seed)
        if tcfg.lora.enabled:
            self._add_lora(tcfg.lora)
            self._reference_denoiser = None
        else:
            self._reference_denoiser = copy.deepcopy(model.denoiser).requires_grad_(False) if tcfg.kl_coef > 0 else None
        if tcfg.gradient_checkpointing:
            model.denoiser.enable_gradient_checkpointing()
        if model.dtype != torch.float32:
            # Mixed precision: frozen weights stay in half precision, trained ones in float32.
            cast_training_params(model.denoiser, dtype=torch.float32)
        self.params = model.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        self.ema = EMAModel(self.params, decay=tcfg.ema_decay) if tcfg.ema_decay > 0 else None

    # -- setup -----------------------------------------------------------------------------------
    def _add_lora(self, lora):
        from peft import LoraConfig

        self.model.denoiser.requires_grad_(False)
        self.model.denoiser.add_adapter(
            LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.target_modules, init_lora_weights="gaussian")
        )

    @contextmanager
    def reference_policy(self):
        """The base model: LoRA adapters disabled, or the frozen copy for full fine-tuning."""
        denoiser = self.model.denoiser
        if self.cfg.train.lora.enabled:
            denoiser.disable_adapters()
            try:
                yield
            finally:
                denoiser.enable_adapters()
        else:
            self.model.denoiser = self._reference_denoiser
            try:
                yield
            finally:
                self.model.denoiser = denoiser

    @contextmanager
    def evaluation_weights(self):
        """EMA weights swapped in when EMA is on."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    # -- one iteration ---------------------------------------------------------------------------
    def prompt_noise(self) -> PromptNoise | None:
        pn = self.cfg.drift.prompt_noise
        if not pn.enabled:
            return None
        scale = noise_scale(self.iteration, pn.scale, pn.final_scale, pn.decay_iterations)
        return PromptNoise(scale=scale, tau1=pn.tau1, tau2=pn.tau2, rescale=pn.rescale, psi=pn.psi)

    def iteration_batch(self) -> tuple[list[str], torch.Tensor]:
        s = self.cfg.sampling
        rng = _rng(self.cfg.run.seed, self.iteration, 0)
        replace = s.prompts_per_iteration > len(self.train_prompts)
        idx = rng.choice(len(self.train_prompts), size=s.prompts_per_iteration, replace=replace)
        seeds = rng.integers(0, 2**31 - 1, size=s.prompts_per_iteration * s.group_size)
        return [self.train_prompts[i] for i in idx], torch.as_tensor(seeds, dtype=torch.long)

    def collect(self) -> tuple[Rollout, torch.Tensor]:
        """Roll out this process's shard of the iteration's samples; returns it and its indices."""
        s = self.cfg.sampling
        prompts, seeds = self.iteration_batch()
        sample_prompts, group_ids = expand_groups(prompts, s.group_size)
        mine = dist.shard(len(sample_prompts))
        keep_x0 = self.cfg.drift.shaping.enabled and self.cfg.drift.shaping.mode == "dense"
        ro = rollout_samples(self.model, [sample_prompts[i] for i in mine], group_ids[mine], seeds[mine], s.num_steps,
                             s.noise_level, s.guidance_scale, self.prompt_noise(), keep_x0=keep_x0,
                             batch_size=s.batch_size)
        return ro, mine

    def step_features(self, ro: Rollout) -> torch.Tensor:
        """Embeddings of the clean samples predicted at steps 1 .. T-1, shape (B, T - 1, D)."""
        x0 = ro.x0_preds[:, 1:].flatten(0, 1)
        return self.embed(self.model.decode(x0)).cpu().reshape(ro.x0_preds.shape[0], ro.num_steps - 1, -1)

    def score(self, ro: Rollout, schedule, idx: torch.Tensor, i: int, cond_noise):
        """Recompute step i of the samples ``idx`` under the current policy (with gradients),
        with the conditioning the rollout used (its prompt noise regenerated from the seeds)."""
        s = self.cfg.sampling
        cond = conditioning_at(ro.cond[idx], cond_noise, schedule.tau(i), ro.prompt_noise)
        uncond = None if ro.uncond is None else ro.uncond[idx]
        x = ro.latents[idx, i]
        out = self.model.predict(x, schedule.model_time(i), cond, uncond, s.guidance_scale)
        return schedule.step(i, out, x, s.noise_level, prev_sample=ro.latents[idx, i + 1])

    def update(self, ro: Rollout, adv: torch.Tensor, kept: torch.Tensor) -> dict[str, float]:
        t = self.cfg.train
        T = ro.num_steps
        n_train = max(1, round(T * t.timestep_fraction))
        schedule = self.model.schedule(T)
        kept_idx = torch.nonzero(kept).flatten()
        stats: dict[str, list] = {"loss": [], "kl": [], "clip_fraction": [], "approx_kl": [], "ratio": [], "grad_norm": []}
        self.model.denoiser.train()
        for epoch in range(t.inner_epochs):
            rng = _rng(self.cfg.run.seed, self.iteration, 1, epoch)
            order = kept_idx[torch.as_tensor(rng.permutation(len(kept_idx)))]
            batches = [order[k : k + t.micro_batch] for k in range(0, len(order), t.micro_batch)]
            # Every process runs the same number of micro-batches, so gradient averaging lines up.
            batches += [order[:0]] * (dist.max_over_processes(len(batches)) - len(batches))
            self.optimizer.zero_grad(set_to_none=True)
            for b, idx in enumerate(batches):
                steps = sorted(rng.choice(T, size=n_train, replace=False).tolist()) if len(idx) else []
                noise = condition_noise(ro.cond[idx], ro.seeds[idx]) if ro.prompt_noise is not None else None
                for i in steps:
                    step = self.score(ro, schedule, idx, i, noise)
                    loss, st = clipped_policy_loss(step.log_prob, ro.log_probs[idx, i], adv[idx, i], t.clip_range)
                    if t.kl_coef > 0:
                        with torch.no_grad(), self.reference_policy():
                            ref = self.score(ro, schedule, idx, i, noise)
                        kl = mean_kl(step.mean, ref.mean, step.std).mean()
                        loss = loss + t.kl_coef * kl
                        stats["kl"].append(float(kl.detach()))
                    (loss / (n_train * t.grad_accum)).backward()
                    stats["loss"].append(float(loss.detach()))
                    for k in ("clip_fraction", "approx_kl"):
                        stats[k].append(float(st[k]))
                    stats["ratio"].append(st["ratio"])
                if (b + 1) % t.grad_accum == 0 or b + 1 == len(batches):
                    dist.average_gradients(self.params)
                    stats["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.ema is not None:
                        self.ema.step(self.params)
        ratios = torch.cat(stats.pop("ratio")) if stats["ratio"] else torch.ones(1)
        out = {k: float(np.mean(v)) for k, v in stats.items() if v}
        out.update(ratio_mean=float(ratios.mean()), ratio_min=float(ratios.min()), ratio_max=float(ratios.max()),
                   ratio_max_abs_dev=float((ratios - 1).abs().max()))
        return out

    def step(self) -> dict[str, float]:
        """Run one iteration; returns its metrics (group statistics over all processes' samples)."""
        t0 = time.perf_counter()
        ro, mine = self.collect()
        total = self.cfg.sampling.prompts_per_iteration * self.cfg.sampling.group_size
        local_rewards, local_parts = self.reward(ro.images, ro.prompts)
        rewards = dist.gather_samples(local_rewards, total)
        parts = {k: dist.gather_samples(v, total) for k, v in local_parts.items()}
        features = dist.gather_samples(self.embed(ro.images).cpu(), total)
        step_feats = None
        if ro.x0_preds is not None and ro.num_steps > 1:
            step_feats = dist.gather_samples(self.step_features(ro), total)
        t1 = time.perf_counter()
        adv, kept = group_statistics(rewards, features, step_feats, self.cfg, ro.num_steps)
        metrics = self.update(ro, adv[mine], kept[mine])
        t2 = time.perf_counter()
        metrics.update(
            reward_mean=float(rewards.mean()), reward_std=float(rewards.std()),
            kept_fraction=float(kept.float().mean()),
            time_rollout=t1 - t0, time_update=t2 - t1, time_iteration=t2 - t0,
            **{f"reward/{k}": float(v.mean()) for k, v in parts.items()},
            **diversity_report(features, torch.arange(total) // self.cfg.sampling.group_size),
        )
        if ro.prompt_noise is not None:
            metrics["prompt_noise_scale"] = ro.prompt_noise.scale
        self.iteration += 1
        return metrics

    # -- evaluation, loop, checkpoints -----------------------------------------------------------
    def evaluate(self):
        with self.evaluation_weights(), torch.no_grad():
            return evaluate_with_config(self.cfg, self.model, self.reward, self.embed, self.eval_prompts)

    def record_evaluation(self) -> dict[str, float]:
        metrics = self.evaluate().metrics
        self.trajectory.append({"iteration": self.iteration, **metrics})
        return metrics

    def train(self, callback: MetricsCallback | None = None, checkpoint_dir: str | Path | None = None,
              progress: bool = False) -> list[dict[str, float]]:
        """Train up to ``train.iterations``, evaluating every ``eval.every`` iterations (and at the
        start and the end) and checkpointing every ``checkpoint.every`` (and at the end)."""
        from tqdm.auto import tqdm

        total, every, ck_every = self.cfg.train.iterations, self.cfg.eval.every, self.cfg.checkpoint.every
        # Under data parallelism every process trains; only the main one reports and writes checkpoints.
        emit = callback if callback is not None and dist.is_main() else (lambda metrics, it: None)
        if self.eval_prompts and not self.trajectory:
            emit({f"eval/{k}": v for k, v in self.record_evaluation().items()}, self.iteration)
        bar = tqdm(total=total, initial=self.iteration, desc="DRIFT", disable=None if progress and dist.is_main() else True)
        while self.iteration < total:
            metrics = self.step()
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", div=f"{metrics['diversity']:.3f}")
            emit(metrics, self.iteration)
            done = self.iteration == total
            if self.eval_prompts and (done or (every and self.iteration % every == 0)):
                emit({f"eval/{k}": v for k, v in self.record_evaluation().items()}, self.iteration)
            if checkpoint_dir is not None and dist.is_main() and (done or (ck_every and self.iteration % ck_every == 0)):
                self.save_checkpoint(Path(checkpoint_dir) / f"iter_{self.iteration:06d}")
        bar.close()
        return self.trajectory

    def _weights(self) -> dict[str, torch.Tensor]:
        if self.cfg.train.lora.enabled:
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.model.denoiser)
        return self.model.denoiser.state_dict()

    def save_checkpoint(self, path: str | Path) -> Path:
        """Weights (safetensors), optimizer, EMA, RNG states, iteration and trajectory; written to a
        temporary directory and renamed, so a kill never leaves a half-written checkpoint."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self._weights().items()}, tmp / "weights.safetensors")
        torch.save({
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }, tmp / "trainer_state.pt")
        (tmp / "progress.json").write_text(json.dumps({"iteration": self.iteration, "trajectory": self.trajectory}))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        weights = load_file(path / "weights.safetensors")
        if self.cfg.train.lora.enabled:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model.denoiser, weights)
        else:
            self.model.denoiser.load_state_dict(weights)
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        progress = json.loads((path / "progress.json").read_text())
        self.iteration, self.trajectory = progress["iteration"], progress["trajectory"]


def group_returns(rewards: torch.Tensor, features: torch.Tensor, step_features: torch.Tensor | None, sh,
                  num_steps: int) -> torch.Tensor:
    """Per-step returns (P, G, T): the reward, plus the diversity shaping when it is on.
    ``rewards`` (P, G), ``features`` (P, G, D), ``step_features`` (P, G, T - 1, D) for dense shaping."""
    P, G, T = rewards.shape[0], rewards.shape[1], num_steps
    if not sh.enabled:
        return rewards[..., None].expand(P, G, T)
    final_potential = torch.stack([shp.diversity_potential(f) for f in features])
    scale = torch.stack([shp.shaping_scale(r, sh.weight, sh.gate) for r in rewards])
    if sh.mode == "terminal":
        return (rewards + scale * final_potential)[..., None].expand(P, G, T)
    potentials = torch.zeros(P, G, T + 1)
    potentials[..., T] = final_potential
    for t in range(1, T):
        potentials[:, :, t] = torch.stack([shp.diversity_potential(f[:, t - 1]) for f in step_features])
    terms = torch.stack([shp.dense_shaping_terms(potentials[p], scale[p], sh.gamma) for p in range(P)])
    return torch.stack([shp.returns_to_go(rewards[p], terms[p]) for p in range(P)])


def group_statistics(rewards: torch.Tensor, features: torch.Tensor, step_features: torch.Tensor | None,
                     cfg: DriftConfig, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (B, T) and the kept mask (B,) for a whole iteration batch, samples grouped by
    prompt in blocks of G: optional shaping, optional reward-concentrated subset (on the raw
    rewards), advantages normalised within each group's kept subset and clipped."""
    P, G = cfg.sampling.prompts_per_iteration, cfg.sampling.group_size
    r = rewards.reshape(P, G)
    sub = cfg.drift.subset
    mask = select_subset(r, sub.mode, sub.keep_ratio, sub.z_max) if sub.enabled else torch.ones(P, G, dtype=torch.bool)
    step_f = None if step_features is None else step_features.reshape(P, G, *step_features.shape[1:])
    returns = group_returns(r, features.reshape(P, G, -1), step_f, cfg.drift.shaping, num_steps)
    adv = group_advantages(returns, mask).reshape(P * G, -1)
    return adv.clamp(-cfg.train.adv_clip, cfg.train.adv_clip), mask.reshape(-1)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (temporary directories are ignored)."""
    found = sorted(p for p in Path(directory).glob("iter_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return found[-1] if found else None
