"""GRPO / DRIFT fine-tuning. All training state lives here; the math lives in drift.method.

One iteration: sample P prompts x G seeds -> rollout with log-probs -> rewards and embeddings ->
DRIFT advantages (subset, shaping, group normalisation) -> PPO-clipped updates on a fraction of
the timesteps of each kept sample.

Randomness is a function of (run seed, iteration): prompts, sample seeds and the timesteps trained
are drawn from generators seeded with both, so resuming from a checkpoint replays the same run.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel, cast_training_params
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from drift.config import DriftConfig, config_differences
from drift.errors import ConfigMismatchError, NonFiniteError
from drift.evaluation.protocol import Evaluation, evaluate_with_config
from drift.method.advantages import drift_advantages
from drift.method.grpo import clipped_policy_loss, mean_kl
from drift.method.iteration_schedule import linear_schedule
from drift.models.base import T2IModel
from drift.models.trained import BaseReference, save_trained
from drift.registry import CORPORA
from drift.sampling.rollout import (
    PromptNoise,
    Rollout,
    condition_noise,
    conditioning_at,
    expand_groups,
    prompt_directions,
    rollout_samples,
)
from drift.sampling.window import sde_steps
from drift.scoring.diversity import diversity_report
from drift.scoring.protocols import Embedding
from drift.scoring.rewards import WeightedReward
from drift.training import checkpoints
from drift.training import distributed as dist
from drift.training.compute import ComputeLedger, Passes, sampling_passes, update_passes

# Whole (unsharded) state dicts on CPU, keyed by parameter names: the same under DDP, FSDP or none.
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)

MetricsCallback = Callable[[dict[str, float], int], None]

# Independent random streams per (run seed, iteration): which prompts and sample seeds an iteration
# draws, in which order and on which timesteps the update visits the kept samples, and where the
# SDE window lies.
BATCH_STREAM, UPDATE_STREAM, WINDOW_STREAM = 0, 1, 2


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def ensure_finite(name: str, value: torch.Tensor | float) -> None:
    """Stop the iteration, naming the term, before a non-finite value reaches the weights."""
    if not bool(torch.isfinite(torch.as_tensor(value)).all()):
        raise NonFiniteError(f"non-finite {name}: training stopped before it could reach the weights "
                             "(lower train.lr, check the reward model, or resume from the last checkpoint)")


@dataclass
class ScoredBatch:
    """The whole iteration batch as every process sees it after gathering the shards."""

    rewards: torch.Tensor  # (B,)
    reward_terms: dict[str, torch.Tensor]  # name -> (B,)
    features: torch.Tensor  # (B, D) embeddings of the final samples (diversity)
    shaping_features: torch.Tensor  # (B, D') the potential's embeddings of them (``features`` by default)
    step_features: torch.Tensor | None  # (B, T - 1, D') of the predicted clean samples, dense shaping only


@dataclass
class UpdateLog:
    """Statistics of one update, averaged over micro-batches and timesteps by ``summary``."""

    loss: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    clip_fraction: list[float] = field(default_factory=list)
    approx_kl: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    ratios: list[torch.Tensor] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out = {k: float(np.mean(v)) for k, v in vars(self).items() if k != "ratios" and v}
        ratios = torch.cat(self.ratios) if self.ratios else torch.ones(1)
        out.update(ratio_mean=float(ratios.mean()), ratio_min=float(ratios.min()), ratio_max=float(ratios.max()),
                   ratio_max_abs_dev=float((ratios - 1).abs().max()))
        return out


class Trainer:
    """Owns the training state: the policy module accelerate prepared (``policy``; the adapter's
    ``denoiser`` stays the bare module), the optimizer, EMA, the reference policy for the KL term,
    the iteration counter and the evaluation trajectory."""

    def __init__(self, config: DriftConfig, model: T2IModel, reward: WeightedReward, embed: Embedding,
                 train_prompts: list[str], eval_prompts: list[str] | None = None,
                 shaping_embed: Embedding | None = None):
        if not train_prompts:
            raise ValueError("no training prompts")
        self.cfg = config
        self.model = model
        self.reward = reward
        self.embed = embed
        self.shaping_embed = embed if shaping_embed is None else shaping_embed
        self.train_prompts = list(train_prompts)
        self.eval_prompts = list(eval_prompts or [])
        self.iteration = 0
        self.trajectory: list[dict[str, float]] = []
        self.last_evaluation: Evaluation | None = None  # images and metrics of the latest evaluation
        self.compute = ComputeLedger()
        train = config.train
        torch.manual_seed(config.run.seed)
        if train.lora.enabled:
            self._add_lora(train.lora)
            self._reference_denoiser = None
        elif train.kl_coef > 0:
            self._reference_denoiser = copy.deepcopy(model.denoiser).requires_grad_(False)
        else:
            self._reference_denoiser = None
        if train.gradient_checkpointing:
            model.denoiser.enable_gradient_checkpointing()
        if model.dtype != torch.float32:
            # Mixed precision: frozen weights stay in half precision, trained ones in float32.
            cast_training_params(model.denoiser, dtype=torch.float32)
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=train.lr, weight_decay=train.weight_decay)
        # accelerate places the model, wraps it for the launched engine (DDP, FSDP, DeepSpeed) and
        # runs mixed precision; ``accelerate launch`` decides the engine and the process count.
        self.accelerator = Accelerator(cpu=model.device.type == "cpu", mixed_precision=train.mixed_precision)
        self.policy, self.optimizer = self.accelerator.prepare(model.denoiser, optimizer)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.ema = EMAModel(self.params, decay=train.ema_decay) if train.ema_decay > 0 else None
        pn = config.drift.prompt_noise
        self.noise_directions = None  # the principal directions prompt noise is confined to, if it is
        if pn.enabled and pn.directions == "principal":
            corpus = CORPORA.build(pn.corpus.name, **pn.corpus.args)
            self.noise_directions = prompt_directions(model, corpus, pn.components, config.sampling.batch_size)

    # -- setup -----------------------------------------------------------------------------------
    def _add_lora(self, lora):
        from peft import LoraConfig

        self.model.denoiser.requires_grad_(False)
        self.model.denoiser.add_adapter(
            LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                       init_lora_weights="gaussian")
        )

    @contextmanager
    def reference_policy(self):
        """The module of the base model: the policy with its LoRA adapters disabled, or the frozen
        copy for full fine-tuning."""
        if not self.cfg.train.lora.enabled:
            yield self._reference_denoiser
            return
        self.model.denoiser.disable_adapters()
        try:
            yield self.policy
        finally:
            self.model.denoiser.enable_adapters()

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

    # -- rollouts --------------------------------------------------------------------------------
    def prompt_noise(self) -> PromptNoise | None:
        pn = self.cfg.drift.prompt_noise
        if not pn.enabled:
            return None
        scale = linear_schedule(self.iteration, pn.scale, pn.final_scale, pn.decay_iterations)
        return PromptNoise(scale=scale, tau1=pn.tau1, tau2=pn.tau2, rescale=pn.rescale, psi=pn.psi, form=pn.form,
                           floor=pn.floor, directions=self.noise_directions)

    def iteration_batch(self) -> tuple[list[str], torch.Tensor]:
        """This iteration's P prompts and P * G sample seeds (the same on every process)."""
        s = self.cfg.sampling
        rng = _rng(self.cfg.run.seed, self.iteration, BATCH_STREAM)
        replace = s.prompts_per_iteration > len(self.train_prompts)
        idx = rng.choice(len(self.train_prompts), size=s.prompts_per_iteration, replace=replace)
        seeds = rng.integers(0, 2**31 - 1, size=s.prompts_per_iteration * s.group_size)
        return [self.train_prompts[i] for i in idx], torch.as_tensor(seeds, dtype=torch.long)

    def sde_step_mask(self) -> torch.Tensor:
        """(T,) bool mask of this iteration's stochastic, trainable steps (the same on every process)."""
        s = self.cfg.sampling
        rng = _rng(self.cfg.run.seed, self.iteration, WINDOW_STREAM)
        return sde_steps(s.sde_window, s.num_steps, self.iteration, rng)

    def collect(self) -> tuple[Rollout, torch.Tensor]:
        """Roll out this process's shard of the iteration's samples; returns it and its indices."""
        s = self.cfg.sampling
        prompts, seeds = self.iteration_batch()
        sample_prompts, group_ids = expand_groups(prompts, s.group_size)
        local = dist.shard(len(sample_prompts))
        keep_x0 = self.cfg.drift.shaping.enabled and self.cfg.drift.shaping.mode == "dense"
        rolled = rollout_samples(self.model, [sample_prompts[i] for i in local], group_ids[local], seeds[local],
                                 self.cfg.sampler(), prompt_noise=self.prompt_noise(), keep_x0=keep_x0,
                                 batch_size=s.batch_size, sde_steps=self.sde_step_mask(), denoiser=self.policy)
        return rolled, local

    def score_rollout(self, rolled: Rollout) -> ScoredBatch:
        """Rewards and embeddings of this shard, gathered into the whole batch."""
        total = self.cfg.sampling.prompts_per_iteration * self.cfg.sampling.group_size
        rewards, terms = self.reward(rolled.images, rolled.prompts)
        step_features = None
        if rolled.x0_preds is not None and rolled.num_steps > 1:
            step_features = dist.gather_samples(self.predicted_sample_features(rolled), total)
        features = dist.gather_samples(self.embed(rolled.images).cpu(), total)
        return ScoredBatch(
            rewards=dist.gather_samples(rewards, total),
            reward_terms={k: dist.gather_samples(v, total) for k, v in terms.items()},
            features=features,
            shaping_features=features if self.shaping_embed is self.embed else
            dist.gather_samples(self.shaping_embed(rolled.images).cpu(), total),
            step_features=step_features,
        )

    def predicted_sample_features(self, rolled: Rollout) -> torch.Tensor:
        """Embeddings of the clean samples predicted at steps 1 .. T-1, shape (B, T - 1, D)."""
        x0 = rolled.x0_preds[:, 1:].flatten(0, 1)
        features = self.shaping_embed(self.model.decode(x0)).cpu()
        return features.reshape(rolled.x0_preds.shape[0], rolled.num_steps - 1, -1)

    # -- the update ------------------------------------------------------------------------------
    def recompute_transition(self, rolled: Rollout, schedule, samples: torch.Tensor, i: int, cond_noise,
                             denoiser: nn.Module | None = None):
        """Step i of ``samples`` under the current policy (with gradients; or under ``denoiser``),
        with the conditioning the rollout used (its prompt noise regenerated from the seeds): its
        log-probability and mean."""
        s = self.cfg.sampling
        cond = conditioning_at(self.model, rolled.cond[samples], cond_noise, schedule.tau(i), rolled.prompt_noise)
        uncond = None if rolled.uncond is None else rolled.uncond[samples]
        x = rolled.latents[samples, i]
        out = self.model.predict(x, schedule.model_time(i), cond, uncond, s.guidance_scale,
                                 denoiser=self.policy if denoiser is None else denoiser)
        return schedule.step(i, out, x, s.noise_level, prev_sample=rolled.latents[samples, i + 1])

    def reference_kl(self, rolled: Rollout, schedule, samples: torch.Tensor, i: int, cond_noise,
                     transition) -> torch.Tensor:
        """Per-sample KL between the policy's and the reference policy's step distributions (B,)."""
        with torch.no_grad(), self.reference_policy() as reference_module:
            reference = self.recompute_transition(rolled, schedule, samples, i, cond_noise, reference_module)
        return mean_kl(transition.mean, reference.mean, transition.std)

    def micro_batches(self, kept: torch.Tensor, trainable: torch.Tensor,
                      epoch: int) -> list[tuple[torch.Tensor, list[int]]]:
        """The whole batch's kept samples (global indices) in a seeded random order, in micro-batches,
        each with the timesteps it trains on, drawn from the ``trainable`` ones (T,): train.trained_steps
        of them, or max(1, round(timestep_fraction * trainable)). Every process draws the same plan, and
        trains on the part of each micro-batch it rolled out: the same optimizer steps on the same
        samples whatever the process count."""
        train = self.cfg.train
        steps = torch.nonzero(trainable).flatten()
        n_train = min(len(steps), train.trained_steps or max(1, round(len(steps) * train.timestep_fraction)))
        rng = _rng(self.cfg.run.seed, self.iteration, UPDATE_STREAM, epoch)
        kept_idx = torch.nonzero(kept).flatten()
        order = kept_idx[torch.as_tensor(rng.permutation(len(kept_idx)))]
        batches = [order[k : k + train.micro_batch] for k in range(0, len(order), train.micro_batch)]
        return [(b, sorted(steps[rng.choice(len(steps), size=n_train, replace=False)].tolist())) for b in batches]

    def accumulate_micro_batch(self, rolled: Rollout, schedule, batch: torch.Tensor, timesteps: list[int],
                               advantages: torch.Tensor, local: torch.Tensor, sync: bool, log: UpdateLog) -> None:
        """Backpropagate this process's part of one micro-batch's loss, one timestep at a time.

        The micro-batch loss is the mean over its N samples; this process adds sum_{its samples}
        L_i / N times the process count W, since the engine averages gradients over processes. A
        process that holds none of the micro-batch runs a zero-weight pass, so that every process
        takes part in each synchronisation. Gradients are synchronised only on the last backward
        before an optimizer step (``sync``)."""
        train = self.cfg.train
        world = dist.world()[1]
        position = {int(g): k for k, g in enumerate(local)}
        samples = torch.tensor([position[int(g)] for g in batch if int(g) in position], dtype=torch.long)
        share = float(world)
        if len(samples) == 0:
            samples, share = torch.zeros(1, dtype=torch.long), 0.0
        cond_noise = None
        if rolled.prompt_noise is not None:
            cond_noise = condition_noise(rolled.cond[samples], rolled.seeds[samples], rolled.prompt_noise.directions)
        for k, i in enumerate(timesteps):
            last = sync and k == len(timesteps) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.policy):
                transition = self.recompute_transition(rolled, schedule, samples, i, cond_noise)
                losses, stats = clipped_policy_loss(transition.log_prob, rolled.log_probs[samples, i],
                                                    advantages[samples, i], train.clip_range)
                policy_loss = losses.sum() / len(batch) * share
                kl_penalty = None
                if train.kl_coef > 0:
                    kl = self.reference_kl(rolled, schedule, samples, i, cond_noise, transition)
                    kl_penalty = kl.sum() / len(batch) * share
                loss = policy_loss if kl_penalty is None else policy_loss + train.kl_coef * kl_penalty
                ensure_finite("loss", loss.detach())
                self.accelerator.backward(loss / (len(timesteps) * train.grad_accum))

            if share:
                log.loss.append(float(loss.detach()))
                if kl_penalty is not None:
                    log.kl.append(float(kl_penalty.detach()))
                log.clip_fraction.append(float(stats["clip_fraction"]))
                log.approx_kl.append(float(stats["approx_kl"]))
                log.ratios.append(stats["ratio"])

    def optimizer_step(self) -> float | None:
        """Clip and step (gradients are already averaged over processes by the engine); returns
        the gradient norm before clipping, or None where the engine clips inside its own step
        (DeepSpeed, configured with gradient_clipping)."""
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
        if grad_norm is not None:
            grad_norm = float(grad_norm)
            ensure_finite("gradient norm", grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.params)
        return grad_norm

    def update(self, rolled: Rollout, advantages: torch.Tensor, kept: torch.Tensor,
               local: torch.Tensor) -> tuple[dict[str, float], list[tuple[torch.Tensor, list[int]]]]:
        """PPO-clipped updates; one optimizer step per ``train.grad_accum`` micro-batches (and at the
        end of each epoch). ``advantages`` (B_local, T) are this process's samples', ``kept`` (B,)
        the whole batch's mask, ``local`` the global indices of this process's samples. Returns the
        update's statistics and the global plan it followed (every epoch's micro-batches)."""
        train = self.cfg.train
        schedule = self.model.schedule(rolled.num_steps)
        log = UpdateLog()
        plan = []
        self.policy.train()
        for epoch in range(train.inner_epochs):
            batches = self.micro_batches(kept, rolled.trainable, epoch)
            plan += batches
            self.optimizer.zero_grad(set_to_none=True)
            for b, (batch, timesteps) in enumerate(batches):
                step_now = (b + 1) % train.grad_accum == 0 or b + 1 == len(batches)
                self.accumulate_micro_batch(rolled, schedule, batch, timesteps, advantages, local, step_now, log)
                if step_now and (grad_norm := self.optimizer_step()) is not None:
                    log.grad_norm.append(grad_norm)
        return dist.mean_over_processes(log.summary()), plan

    # -- one iteration ---------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """Run one iteration; returns its metrics (group statistics over all processes' samples)."""
        t0 = time.perf_counter()
        rolled, local = self.collect()
        batch = self.score_rollout(rolled)
        ensure_finite("reward", batch.rewards)
        t1 = time.perf_counter()
        advantages, kept = drift_advantages(batch.rewards, batch.shaping_features, batch.step_features, self.cfg,
                                            rolled.num_steps, self.iteration)
        ensure_finite("advantages", advantages)
        # the advantages come from gathered CPU tensors; the loss is taken where the log-probs are
        metrics, plan = self.update(rolled, advantages[local].to(rolled.log_probs.device), kept, local)
        t2 = time.perf_counter()
        passes = self.iteration_passes(plan)
        self.compute.add_iteration(passes, t2 - t0)

        group_ids = torch.arange(len(batch.rewards)) // self.cfg.sampling.group_size
        metrics.update(
            reward_mean=float(batch.rewards.mean()), reward_std=float(batch.rewards.std()),
            kept_fraction=float(kept.float().mean()), processes=dist.world()[1],
            time_rollout=t1 - t0, time_update=t2 - t1, time_iteration=t2 - t0,
            **{f"reward/{k}": float(v.mean()) for k, v in batch.reward_terms.items()},
            **diversity_report(batch.features, group_ids),
            **passes.metrics("compute/"), **self.compute.metrics(),
            sde_steps=int(rolled.trainable.sum()), sde_window_start=int(torch.nonzero(rolled.trainable)[0]),
        )
        if rolled.prompt_noise is not None:
            metrics["prompt_noise_scale"] = rolled.prompt_noise.scale
        self.iteration += 1
        return metrics

    def iteration_passes(self, plan: list[tuple[torch.Tensor, list[int]]]) -> Passes:
        """Denoiser passes of this iteration's rollout (all processes) and of the update's global ``plan``."""
        s = self.cfg.sampling
        return (sampling_passes(s.prompts_per_iteration * s.group_size, s.num_steps, s.guidance_scale)
                + update_passes(plan, s.guidance_scale, kl=self.cfg.train.kl_coef > 0))

    # -- evaluation and the loop -----------------------------------------------------------------
    def evaluate(self):
        with self.evaluation_weights(), torch.no_grad():
            return evaluate_with_config(self.cfg, self.model, self.reward, self.embed, self.eval_prompts,
                                        denoiser=self.policy)

    def save_model(self, directory: str | Path, base: BaseReference) -> Path:
        """What training changed (EMA weights when on): the LoRA adapters in diffusers' format, or
        the whole denoiser, with ``base`` pinning the rest (drift.models.trained); ``load_model``
        opens the directory."""
        with self.evaluation_weights():
            return save_trained(self.model, directory, base)

    def record_evaluation(self) -> dict[str, float]:
        self.last_evaluation = self.evaluate()
        self.compute.eval_forward += sampling_passes(len(self.last_evaluation.prompts), self.cfg.sampling.num_steps,
                                                     self.cfg.sampling.guidance_scale).forward
        metrics = self.last_evaluation.metrics
        self.trajectory.append({"iteration": self.iteration, **metrics})
        return metrics

    def train(self, callback: MetricsCallback | None = None, checkpoint_dir: str | Path | None = None,
              progress: bool = False, until: int | None = None) -> list[dict[str, float]]:
        """Train up to iteration ``until`` (default ``train.iterations``), evaluating every
        ``eval.every`` iterations (and at the start and the end) and checkpointing every
        ``checkpoint.every`` (and at the end). Calling it again with a later ``until`` trains on."""
        from tqdm.auto import tqdm

        total = self.cfg.train.iterations if until is None else until
        every, ck_every = self.cfg.eval.every, self.cfg.checkpoint.every
        # Under data parallelism every process trains; only the main one reports and writes checkpoints.
        emit = callback if callback is not None and dist.is_main() else (lambda metrics, it: None)
        if self.eval_prompts and not self.trajectory:
            emit({f"eval/{k}": v for k, v in self.record_evaluation().items()}, self.iteration)
        bar = tqdm(total=total, initial=self.iteration, desc="DRIFT",
                   disable=None if progress and dist.is_main() else True)
        while self.iteration < total:
            metrics = self.step()
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", div=f"{metrics['diversity']:.3f}")
            emit(metrics, self.iteration)
            done = self.iteration == total
            if self.eval_prompts and (done or (every and self.iteration % every == 0)):
                emit({f"eval/{k}": v for k, v in self.record_evaluation().items()}, self.iteration)
            if checkpoint_dir is not None and (done or (ck_every and self.iteration % ck_every == 0)):
                if self.save_checkpoint(Path(checkpoint_dir) / checkpoints.checkpoint_name(self.iteration)):
                    checkpoints.prune(checkpoint_dir, self.cfg.checkpoint.keep_last)
        bar.close()
        return self.trajectory

    # -- checkpoints -----------------------------------------------------------------------------
    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The weights training changes, whole on the main process however the engine shards them:
        the LoRA adapters, or the whole denoiser. A collective: every process must call it."""
        full = get_model_state_dict(self.policy, options=FULL_STATE)
        if self.cfg.train.lora.enabled:
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.model.denoiser, state_dict=full)
        return full

    def state_dict(self) -> dict:
        """Everything but the weights that resuming needs, as plain data and tensors; the optimizer
        state is keyed by parameter names, so that it loads under any process count. A collective."""
        np_state = np.random.get_state()
        return {
            "iteration": self.iteration,
            "trajectory": self.trajectory,
            "config": self.cfg.model_dump(mode="json"),
            "optimizer": get_optimizer_state_dict(self.policy, self.optimizer.optimizer, options=FULL_STATE),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "compute": self.compute.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": [np_state[0], np_state[1], *np_state[2:]],
                    "python": random.getstate()},
        }

    def save_checkpoint(self, path: str | Path) -> Path | None:
        """Every process gathers the state; the main process writes it (returns the path there)."""
        weights, state = self.trained_weights(), self.state_dict()
        if not dist.is_main():
            return None
        return checkpoints.save_checkpoint(path, weights, state)

    def load_checkpoint(self, path: str | Path, allow_config_change: bool = False) -> None:
        self.restore(checkpoints.load_checkpoint(path), allow_config_change)

    def restore(self, ckpt: checkpoints.Checkpoint, allow_config_change: bool = False) -> None:
        """Restore weights, optimizer, EMA, RNG states, iteration and trajectory from a checkpoint.
        A run configuration that differs from the checkpoint's in anything but the iteration budget
        is refused, naming the fields, unless ``allow_config_change``."""
        state = ckpt.state
        changed = config_differences(state["config"], self.cfg.model_dump(mode="json"))
        if changed and not allow_config_change:
            raise ConfigMismatchError(
                f"{ckpt.path} was written by a run with another configuration: {'; '.join(changed)}. "
                "Resume with the checkpoint's configuration, start a new run (another run name or output "
                "directory), or allow the change explicitly (drift train --allow-config-change).")
        if self.cfg.train.lora.enabled:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model.denoiser, ckpt.weights)
        else:
            set_model_state_dict(self.policy, ckpt.weights, options=FULL_STATE)
        set_optimizer_state_dict(self.policy, self.optimizer.optimizer, state["optimizer"],
                                 options=FULL_STATE)
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        self.iteration, self.trajectory = state["iteration"], state["trajectory"]
        self.compute = ComputeLedger(**state.get("compute", {}))  # checkpoints from before the ledger: 0
