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
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from drift import shaping as shp
from drift.config import DriftConfig
from drift.diversity import diversity_report
from drift.evaluation import evaluate_with_config
from drift.grpo import clipped_policy_loss, mean_kl
from drift.models.base import T2IModel
from drift.prompt_noise import noise_scale
from drift.rollout import PromptNoise, Rollout, condition_noise, conditioning_at, rollout
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

    def collect(self) -> Rollout:
        s = self.cfg.sampling
        prompts, seeds = self.iteration_batch()
        keep_x0 = self.cfg.drift.shaping.enabled and self.cfg.drift.shaping.mode == "dense"
        return rollout(self.model, prompts, s.group_size, seeds, s.num_steps, s.noise_level, s.guidance_scale,
                       self.prompt_noise(), keep_x0=keep_x0, batch_size=s.batch_size)

    def returns(self, ro: Rollout, rewards: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Per-step returns (P, G, T): the reward, plus the diversity shaping when it is on."""
        sh = self.cfg.drift.shaping
        P, G, T = rewards.shape[0], rewards.shape[1], ro.num_steps
        if not sh.enabled:
            return rewards[..., None].expand(P, G, T)
        final_potential = torch.stack([shp.diversity_potential(f) for f in features])
        scale = torch.stack([shp.shaping_scale(r, sh.weight, sh.gate) for r in rewards])
        if sh.mode == "terminal":
            return (rewards + scale * final_potential)[..., None].expand(P, G, T)
        potentials = torch.zeros(P, G, T + 1)
        potentials[..., T] = final_potential
        if T > 1:
            x0 = ro.x0_preds[:, 1:].flatten(0, 1)
            step_feats = self.embed(self.model.decode(x0)).cpu().reshape(P, G, T - 1, -1)
            for t in range(1, T):
                potentials[:, :, t] = torch.stack([shp.diversity_potential(f[:, t - 1]) for f in step_feats])
        terms = torch.stack([shp.dense_shaping_terms(potentials[p], scale[p], sh.gamma) for p in range(P)])
        return torch.stack([shp.returns_to_go(rewards[p], terms[p]) for p in range(P)])

    def advantages(self, ro: Rollout, rewards: torch.Tensor, features: torch.Tensor):
        P, G = self.cfg.sampling.prompts_per_iteration, self.cfg.sampling.group_size
        r = rewards.reshape(P, G)
        f = features.reshape(P, G, -1)
        sub = self.cfg.drift.subset
        mask = select_subset(r, sub.mode, sub.keep_ratio, sub.z_max) if sub.enabled else torch.ones(P, G, dtype=torch.bool)
        adv = group_advantages(self.returns(ro, r, f), mask).reshape(P * G, -1)
        adv = adv.clamp(-self.cfg.train.adv_clip, self.cfg.train.adv_clip)
        return adv, mask.reshape(-1)

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
            self.optimizer.zero_grad(set_to_none=True)
            for b, idx in enumerate(batches):
                steps = sorted(rng.choice(T, size=n_train, replace=False).tolist())
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
        """Run one iteration; returns its metrics."""
        t0 = time.perf_counter()
        ro = self.collect()
        rewards, parts = self.reward(ro.images, ro.prompts)
        features = self.embed(ro.images).cpu()
        t1 = time.perf_counter()
        adv, kept = self.advantages(ro, rewards, features)
        metrics = self.update(ro, adv, kept)
        t2 = time.perf_counter()
        metrics.update(
            reward_mean=float(rewards.mean()), reward_std=float(rewards.std()),
            kept_fraction=float(kept.float().mean()),
            time_rollout=t1 - t0, time_update=t2 - t1, time_iteration=t2 - t0,
            **{f"reward/{k}": float(v.mean()) for k, v in parts.items()},
            **diversity_report(features, ro.group_ids),
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
        emit = callback or (lambda metrics, it: None)
        if self.eval_prompts and not self.trajectory:
            emit({f"eval/{k}": v for k, v in self.record_evaluation().items()}, self.iteration)
        bar = tqdm(total=total, initial=self.iteration, desc="DRIFT", disable=None if progress else True)
        while self.iteration < total:
            metrics = self.step()
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", div=f"{metrics['diversity']:.3f}")
            emit(metrics, self.iteration)
            done = self.iteration == total
            if self.eval_prompts and (done or (every and self.iteration % every == 0)):
                emit({f"eval/{k}": v for k, v in self.record_evaluation().items()}, self.iteration)
            if checkpoint_dir is not None and (done or (ck_every and self.iteration % ck_every == 0)):
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


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (temporary directories are ignored)."""
    found = sorted(p for p in Path(directory).glob("iter_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return found[-1] if found else None
