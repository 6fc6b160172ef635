"""`drift bench gpu`: time, memory and numerics of DRIFT's training steps on SD 3.5 Medium and
FLUX.1-dev at full size, with random weights built from their published architectures.

No weights can be downloaded, but an architecture's cost does not depend on its weights: the
denoiser, VAE and text encoders are built from the configs in configs/gpu/*.json (the published
config.json values), with random weights initialised directly on the device, in the run
configuration's dtype. The text encoders are built shallow (``text_encoder_layers`` deep) at
their full width: they run once per prompt batch and their output shapes, which are all the
denoiser sees, are the real ones. Each model then runs the shipped run configuration
(configs/sd35m_pickscore.yaml, configs/flux_dev_pickscore.yaml: group size, rollout batch, steps,
SDE window, prompt noise, guidance, LoRA, micro-batch, gradient checkpointing, KL) through the
project's own code, at 512 px, on one prompt group:

* rollout: ``Trainer.collect`` (the rollout with log-probabilities, fp32 step math) against
  diffusers' own pipeline call (``StableDiffusion3Pipeline`` / ``FluxPipeline``) on the same
  model, prompts, initial noise and batches, both with text encoding and decoding; seconds per
  image-step, their ratio, and each one's peak memory;
* update: ``Trainer.update`` on that rollout, with advantages from a stand-in reward (mean
  brightness: PickScore's own cost is not measured); seconds per trained sample-step (the first
  update, and a second one after it, warmed up), peak memory, and the first update's largest
  |importance ratio - 1| and gradient norm (one optimizer step: every ratio is computed before
  the weights change, so a deviation is numerics only);
* fit: the largest update micro-batch that fits in the device's memory, probing
  ``Trainer.accumulate_micro_batch`` on one trained step (the update's peak does not depend on
  how many) and catching out-of-memory errors; see ``search_largest``.

``scale="tiny"`` builds the same pipelines from the files' small architectures and runs the same
code on the CPU, where memory is not measured (null) and the micro-batch search, with no device
memory to run out of, stops at its limit.
"""

from __future__ import annotations

import gc
import json
import math
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from drift.bench.efficiency import paired_times
from drift.config import DriftConfig, load_config
from drift.errors import DriftError
from drift.method.advantages import drift_advantages
from drift.models import T2IModel, wrap_pipeline
from drift.models.flux import DEFAULT_GUIDANCE, FluxModel
from drift.models.tiny import random_pipeline
from drift.sampling.rollout import expand_groups, sample_generators
from drift.training.trainer import Trainer, UpdateLog

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"sd35m": "configs/gpu/sd35m.json", "flux-dev": "configs/gpu/flux_dev.json"}
TITLES = {"sd35m": "SD 3.5 Medium", "flux-dev": "FLUX.1-dev"}
PHASES = ("rollout", "update", "fit")
SCALES = ("full", "tiny")
GIB = 2**30

# Training prompts: lowercase letters and spaces, in the tokenizers' alphabet and short enough for
# the tiny ones. They are padded to the tokenizers' lengths, so their wording does not change the cost.
PROMPTS = ["a red fox", "a lighthouse", "two cups", "an astronaut"]


# -- building ------------------------------------------------------------------------------------
def load_spec(name: str) -> dict:
    """The architecture file of ``name`` (configs/gpu/*.json)."""
    return json.loads((ROOT / MODELS[name]).read_text())


def run_config(spec: dict, device: str, resolution: int) -> DriftConfig:
    """The shipped run configuration on ``device`` at ``resolution``, with one prompt group per
    iteration (the rates are per image and per sample, so one group measures them)."""
    return load_config(ROOT / spec["run_config"], {"run.device": device, "model.height": resolution,
                                                   "model.width": resolution, "sampling.prompts_per_iteration": 1})


def build_model(arch: dict, cfg: DriftConfig, text_encoder_layers: int | None) -> T2IModel:
    """The random-weight pipeline on the run's device and dtype, wrapped in its adapter."""
    torch.manual_seed(cfg.run.seed)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        pipe = random_pipeline(arch, tokenizer_dir, cfg.run.device, getattr(torch, cfg.model.dtype),
                               text_encoder_layers)
    pipe.set_progress_bar_config(disable=True)
    return wrap_pipeline(pipe, cfg.model.family, cfg.run.device, getattr(torch, cfg.model.dtype),
                         **cfg.model.options.model_dump())


def parameter_counts(model: T2IModel, arch: dict) -> dict[str, float]:
    """Parameters of the denoiser without its LoRA adapters, the trained ones (the adapters, once
    the trainer added them), the VAE, and the text encoders as built and as published (their
    configs' depth and vocabulary, counted on the meta device), with the weight memory the
    published ones would add in the model's dtype."""
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    encoders = {n: getattr(model.pipe, n) for n in ("text_encoder", "text_encoder_2", "text_encoder_3")
                if getattr(model.pipe, n, None) is not None}
    with torch.device("meta"):
        published = sum(count(type(e)(type(e.config)(**arch[n]))) for n, e in encoders.items())
    built = sum(count(e) for e in encoders.values())
    trained = sum(p.numel() for p in model.trainable_parameters())
    return {"denoiser": count(model.denoiser) - trained, "trained": trained, "vae": count(model.vae),
            "text_encoders_built": built, "text_encoders_published": published,
            "text_encoder_weights_not_built_gib": (published - built) * model.dtype.itemsize / GIB}


def stand_in_reward(images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean brightness per image: a cheap reward with the shape of a real one (on the CPU, as the
    trainer's rewards are)."""
    value = images.to(torch.float32).mean(dim=(1, 2, 3)).cpu()
    return value, {"brightness": value}


def stand_in_embedding(images: torch.Tensor) -> torch.Tensor:
    """8 x 8 average-pooled pixels: features for the diversity shaping."""
    return torch.nn.functional.adaptive_avg_pool2d(images.to(torch.float32), 8).flatten(1).cpu()


# -- measuring -----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    """Peak memory allocated by torch on the device since the last reset; None off CUDA."""
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def _allocated_gib(device: torch.device) -> float | None:
    """Memory allocated by torch on the device now; None off CUDA."""
    return torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None


def _free(device: torch.device) -> None:
    """Give freed device memory back (after an out-of-memory error its tensors may wait for the
    garbage collector); nothing to do on the CPU."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float | None]:
    """``fn()``, its wall seconds (device work finished) and the peak memory while it ran."""
    _reset_peak(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - t0, _peak_gib(device)


def _pipeline_guidance(model: T2IModel, guidance_scale: float, negative_prompt: str) -> dict[str, Any]:
    """The pipeline-call arguments that sample as the run configuration does."""
    if isinstance(model, FluxModel):
        return {"guidance_scale": DEFAULT_GUIDANCE if model.guidance is None else model.guidance,
                "true_cfg_scale": guidance_scale, "negative_prompt": negative_prompt if guidance_scale > 1 else None,
                "max_sequence_length": model.max_sequence_length}
    return {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}


@torch.no_grad()
def pipeline_sample(model: T2IModel, prompts: list[str], seeds: torch.Tensor, num_steps: int, guidance_scale: float,
                    batch_size: int, negative_prompt: str = "") -> torch.Tensor:
    """diffusers' own pipeline call on the rollout's model, prompts, initial noise (from each
    sample's seed) and batches: text encoding, its denoising loop and decoding; images (B, 3, H, W)."""
    images = []
    for start in range(0, len(prompts), batch_size):
        idx = slice(start, start + batch_size)
        gens = sample_generators(seeds[idx], offset=0)
        x = randn_tensor((len(gens), *model.latent_shape), generator=gens, device=model.device, dtype=torch.float32)
        out = model.pipe(prompt=prompts[idx], latents=x, num_inference_steps=num_steps, height=model.height,
                         width=model.width, output_type="pt",
                         **_pipeline_guidance(model, guidance_scale, negative_prompt))
        images.append(out.images)
    return torch.cat(images)


def rollout_phase(trainer: Trainer, repeats: int) -> tuple[dict, Any]:
    """The trainer's rollout against the pipeline call (``paired_times``: one warm-up round, then
    ``repeats`` rounds of both back to back); returns the figures and the last rollout."""
    s, model = trainer.cfg.sampling, trainer.model
    prompts, seeds = trainer.iteration_batch()
    sample_prompts, _ = expand_groups(prompts, s.group_size)
    peaks: dict[str, float | None] = {}
    last: dict[str, Any] = {}

    def measured(name: str, fn):
        def call():
            result, _, peak = timed(fn, model.device)
            peaks[name] = peak if peaks.get(name) is None else max(peaks[name], peak)
            last[name] = result
        return call

    samplers = {
        "pipeline": measured("pipeline", lambda: pipeline_sample(model, sample_prompts, seeds, s.num_steps,
                                                                 s.guidance_scale, s.batch_size, s.negative_prompt)),
        "rollout": measured("rollout", lambda: trainer.collect()),
    }
    seconds, ratios = paired_times(samplers, repeats, reference="pipeline")
    image_steps = len(sample_prompts) * s.num_steps
    figures = {
        "images": len(sample_prompts), "steps": s.num_steps, "batch_size": s.batch_size, "repeats": repeats,
        "seconds": seconds["rollout"], "pipeline_seconds": seconds["pipeline"],
        "seconds_per_image_step": seconds["rollout"] / image_steps,
        "pipeline_seconds_per_image_step": seconds["pipeline"] / image_steps,
        "ratio_to_pipeline": ratios["rollout"],
        "peak_memory_gib": peaks["rollout"], "pipeline_peak_memory_gib": peaks["pipeline"],
    }
    return figures, last["rollout"][0]


def advantages_of(trainer: Trainer, rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """This rollout's advantages (B, T) on the model's device and the kept mask, through the
    trainer's scoring and DRIFT's advantages (subset, shaping, group normalisation)."""
    batch = trainer.score_rollout(rollout)
    advantages, kept = drift_advantages(batch.rewards, batch.shaping_features, batch.step_features, trainer.cfg,
                                        rollout.num_steps, trainer.iteration)
    # The update indexes advantages beside the device's log-probabilities: keep them on its device.
    return advantages.to(trainer.model.device), kept


def update_phase(trainer: Trainer, rollout, mine: torch.Tensor, advantages: torch.Tensor, kept: torch.Tensor) -> dict:
    """The first update (ratios, gradient norm, time with warm-up) and a second one (time)."""
    device = trainer.model.device
    (first, plan), first_seconds, first_peak = timed(lambda: trainer.update(rollout, advantages, kept, mine), device)
    _, seconds, peak = timed(lambda: trainer.update(rollout, advantages, kept, mine), device)
    sample_steps = sum(len(batch) * len(steps) for batch, steps in plan)
    train = trainer.cfg.train
    return {
        "kept_samples": int(kept.sum()), "micro_batch": train.micro_batch, "grad_accum": train.grad_accum,
        "micro_batches": len(plan), "trained_sample_steps": sample_steps,
        # one optimizer step, at the end: every ratio of the first update is computed before the weights change
        "ratios_before_first_step": train.inner_epochs == 1 and len(plan) <= train.grad_accum,
        "first_seconds": first_seconds, "seconds": seconds, "seconds_per_sample_step": seconds / sample_steps,
        "first_seconds_per_sample_step": first_seconds / sample_steps,
        "peak_memory_gib": None if peak is None else max(peak, first_peak),
        "ratio_max_abs_dev": first["ratio_max_abs_dev"], "ratio_mean": first["ratio_mean"],
        "grad_norm": first.get("grad_norm"), "clip_fraction": first["clip_fraction"],
    }


def search_largest(probe: Callable[[int], tuple[bool, float | None]], start: int, limit: int,
                   capacity: float | None = None, affordable: Callable[[int], bool] = lambda m: True) -> dict:
    """The largest micro-batch m <= ``limit`` for which ``probe(m)`` -> (fits, peak memory) fits,
    assuming that what fits at m fits below it.

    From ``start``, sizes double until one fails (halve until one fits). With ``capacity`` (the
    memory the probes may use), once two sizes have fitted the next one is where their peaks
    extrapolate to (linear in m, 5% kept free), and from that guess sizes move by an eighth of it
    up while they fit (down while they fail), doubling the step each time. Between a fitting and a
    failing size, bisection; the search ends when they are within an eighth of each other. Each
    probe is first offered to ``affordable(m)``; the search stops when it declines. Returns the
    largest fitting and smallest failing sizes seen (None: none), the extrapolated size (None: not
    reached), every probe, and why it stopped."""
    lo = hi = extrapolated = None
    probes, guessed, step = [], False, 0
    m, stopped = max(1, min(start, limit)), "bracketed"
    while True:
        if not affordable(m):
            stopped = "time budget"
            break
        fits, peak = probe(m)
        probes.append({"micro_batch": m, "fits": fits, "peak_memory_gib": peak})
        if fits:
            lo = m
        else:
            hi = m
        if lo == limit:
            stopped = "limit"
            break
        if hi == 1:
            stopped = "nothing fits"
            break
        if lo is not None and hi is not None and hi - lo <= max(1, lo // 8):
            break
        guess = None if guessed else _extrapolate(probes, capacity)
        extrapolated = extrapolated if guess is None else guess
        if guess is not None and guess > lo and (hi is None or guess < hi):
            guessed, step, following = True, max(1, guess // 8), guess
        elif guessed:
            following = m + step if fits else m - step
            step *= 2
        elif hi is None:
            following = 2 * lo
        elif lo is None:
            following = hi // 2
        else:
            following = (lo + hi) // 2
        if lo is not None and hi is not None and not lo < following < hi:
            following = (lo + hi) // 2
        m = min(following, limit)
    return {"largest_fitting": lo, "smallest_failing": hi, "limit": limit, "stopped": stopped,
            "extrapolated": extrapolated, "probes": probes}


def _extrapolate(probes: list[dict], capacity: float | None) -> int | None:
    """The micro-batch whose peak reaches 95% of ``capacity`` on the line through the two largest
    fitting probes' peaks; None without two of them or a capacity."""
    fitted = sorted((p["micro_batch"], p["peak_memory_gib"]) for p in probes if p["fits"] and p["peak_memory_gib"])
    if capacity is None or len(fitted) < 2:
        return None
    (m0, p0), (m1, p1) = fitted[-2], fitted[-1]
    slope = (p1 - p0) / (m1 - m0)
    return None if slope <= 0 else int(m1 + (0.95 * capacity - p1) / slope)


def fit_phase(trainer: Trainer, rollout, mine: torch.Tensor, advantages: torch.Tensor, limit: int,
              budget_seconds: float) -> dict:
    """``search_largest`` over ``Trainer.accumulate_micro_batch`` on the first trained step, with
    micro-batches of the rollout's samples repeated as often as needed."""
    device = trainer.model.device
    schedule = trainer.model.schedule(rollout.num_steps)
    step = int(torch.nonzero(rollout.trainable)[0])
    started, per_sample = time.perf_counter(), []

    def probe(m: int) -> tuple[bool, float | None]:
        batch = mine[torch.arange(m) % len(mine)]
        t0 = time.perf_counter()
        try:
            _, _, peak = timed(lambda: trainer.accumulate_micro_batch(rollout, schedule, batch, [step], advantages,
                                                                      mine, True, UpdateLog()), device)
            fits = True
        except torch.OutOfMemoryError:
            fits, peak = False, None
        trainer.optimizer.zero_grad(set_to_none=True)
        _free(device)
        if fits:
            per_sample.append((time.perf_counter() - t0) / m)
        return fits, peak

    def affordable(m: int) -> bool:
        estimate = max(per_sample, default=0.0) * m
        return time.perf_counter() - started + estimate <= budget_seconds

    capacity = None
    if device.type == "cuda":
        _free(device)
        free, _ = torch.cuda.mem_get_info(device)
        capacity = (free + torch.cuda.memory_reserved(device)) / GIB
    result = search_largest(probe, trainer.cfg.train.micro_batch, limit, capacity, affordable)
    result.update(timestep=step, seconds=time.perf_counter() - started, capacity_gib=capacity)
    if device.type != "cuda":
        result["note"] = "no device memory to run out of on the CPU: the search stops at its limit"
    return result


# -- one model, all models -----------------------------------------------------------------------
def settings_of(cfg: DriftConfig) -> dict:
    s, t = cfg.sampling, cfg.train
    return {"resolution": cfg.model.height, "dtype": cfg.model.dtype, "group_size": s.group_size,
            "rollout_batch": s.batch_size, "num_steps": s.num_steps, "sde_window": s.sde_window.size,
            "noise_level": s.noise_level, "guidance_scale": s.guidance_scale, "guidance_input": cfg.model.guidance,
            "micro_batch": t.micro_batch, "grad_accum": t.grad_accum, "timestep_fraction": t.timestep_fraction,
            "kl_coef": t.kl_coef, "gradient_checkpointing": t.gradient_checkpointing, "lora_rank": t.lora.rank,
            "prompt_noise": cfg.drift.prompt_noise.enabled}


def bench_model(name: str, scale: str, device: str, resolution: int | None, phases: tuple[str, ...], repeats: int,
                fit_seconds: float, max_micro_batch: int | None, progress: Callable[[str], None]) -> dict:
    spec = load_spec(name)
    level = spec["scales"][scale]
    cfg = run_config(spec, device, resolution or level["resolution"])
    progress(f"{name}: building ({scale})")
    model, build_seconds, _ = timed(lambda: build_model(level["architecture"], cfg, spec["text_encoder_layers"]),
                                    torch.device(device))
    weights = _allocated_gib(model.device)
    trainer = Trainer(cfg, model, stand_in_reward, stand_in_embedding, PROMPTS)
    result = {"title": TITLES[name], "architecture": MODELS[name], "run_config": spec["run_config"],
              "text_encoder_layers": spec["text_encoder_layers"], "build_seconds": build_seconds,
              "weights_gib": weights, "parameters": parameter_counts(model, level["architecture"]),
              "settings": settings_of(cfg), "rollout": None, "update": None, "fit": None, "out_of_memory": None}
    phase = "rollout"
    try:
        if "rollout" in phases:
            progress(f"{name}: rollout against the pipeline call")
            result["rollout"], rollout = rollout_phase(trainer, repeats)
        else:
            rollout = trainer.collect()[0]
        mine = torch.arange(len(rollout.prompts))
        if "update" in phases or "fit" in phases:
            advantages, kept = advantages_of(trainer, rollout)
        if "update" in phases:
            phase = "update"
            progress(f"{name}: update")
            result["update"] = update_phase(trainer, rollout, mine, advantages, kept)
        if "fit" in phases:
            phase = "fit"
            progress(f"{name}: largest micro-batch")
            limit = max_micro_batch or (2 * cfg.train.micro_batch if model.device.type == "cpu" else 1024)
            result["fit"] = fit_phase(trainer, rollout, mine, advantages, limit, fit_seconds)
    except torch.OutOfMemoryError as err:
        # an outcome to report, not a failure of the benchmark: the next model still runs
        result["out_of_memory"] = {"phase": phase, "message": str(err).splitlines()[0]}
        progress(f"{name}: out of memory in the {phase} phase")
    finally:
        trainer.accelerator.free_memory()
        del trainer, model
        _free(torch.device(device))
    return result


def check_device(device: str) -> None:
    """A device torch knows and this machine has, else a message that says what to do instead."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise DriftError(f"--device {device!r} is not a torch device (e.g. cuda, cuda:1, cpu)") from None
    if kind not in ("cpu", "cuda"):
        raise DriftError(f"--device {device}: drift bench gpu runs on cuda (memory is measured there) or the cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DriftError(f"--device {device}: this machine has no CUDA device. Measure on a GPU machine "
                         "(docs/real_models.md), or run the same code small on the CPU with --scale tiny")
    if kind == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise DriftError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def machine(device: str) -> dict:
    import diffusers
    import transformers

    info = {"device": device, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "cpu_threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / GIB, cuda=torch.version.cuda)
    return info


def run(out: str | Path, models: list[str] | None = None, phases: list[str] | None = None, scale: str = "full",
        device: str | None = None, resolution: int | None = None, repeats: int = 1, fit_seconds: float = 60.0,
        max_micro_batch: int | None = None, progress: bool = True) -> dict:
    """Measure ``models`` (default all) in ``phases`` (default all); writes bench_gpu.json and
    bench_gpu.md to ``out`` and returns the result."""
    device = device or ("cuda" if scale == "full" else "cpu")
    check_device(device)
    if scale not in SCALES:
        raise DriftError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if resolution is not None and (resolution < 16 or resolution % 16):
        raise DriftError(f"--resolution must be a positive multiple of 16 pixels (2 x 2 patches of 8-pixel latent "
                         f"cells), got {resolution}")
    if not fit_seconds >= 0:
        raise DriftError(f"--fit-seconds must be 0 or more, got {fit_seconds}")
    unknown = sorted(set(models or ()) - set(MODELS)) + sorted(set(phases or ()) - set(PHASES))
    if unknown:
        raise DriftError(f"unknown model or phase {', '.join(unknown)}: models are {', '.join(MODELS)}, phases "
                         f"{', '.join(PHASES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(text: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    result = {"scale": scale, "machine": machine(device), "phases": list(phases or PHASES), "models": {}}
    for name in models or list(MODELS):
        result["models"][name] = bench_model(name, scale, device, resolution, tuple(phases or PHASES), repeats,
                                             fit_seconds, max_micro_batch, say)
        # after each model, so that a run stopped by a time limit keeps the models it finished
        result["wall_seconds"] = time.perf_counter() - started
        result["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
        (out / "bench_gpu.json").write_text(json.dumps(result, indent=2))
        (out / "bench_gpu.md").write_text(markdown(result))
    return result


# -- the table -----------------------------------------------------------------------------------
def _num(value, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def _count(n: int) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _rows(r: dict, on_cuda: bool) -> list[tuple[str, str]]:
    mem = (lambda v: _num(v, ".1f", " GiB")) if on_cuda else (lambda v: "not measured (CPU)")
    p, s = r["parameters"], r["settings"]
    rows = [
        ("denoiser parameters (random weights)", _count(p["denoiser"])),
        (f"trained parameters (LoRA rank {s['lora_rank']})", _count(p["trained"])),
        ("text encoders' parameters: built / published",
         f"{_count(p['text_encoders_built'])} / {_count(p['text_encoders_published'])}"),
        ("weights of the published text encoders not built (add to memory)",
         _num(p["text_encoder_weights_not_built_gib"], ".2f", " GiB")),
        ("resolution, dtype", f"{s['resolution']} px, {s['dtype']}"),
        ("weights as built, on the device", mem(r["weights_gib"])),
    ]
    if r["out_of_memory"]:
        rows.append(("out of memory", f"in the {r['out_of_memory']['phase']} phase"))
    ro = r["rollout"]
    if ro:
        rows += [
            ("rollout: images x steps (batch)", f"{ro['images']} x {ro['steps']} ({ro['batch_size']})"),
            ("rollout with log-probs, s per image-step", _num(ro["seconds_per_image_step"], ".4f")),
            ("diffusers pipeline call, s per image-step", _num(ro["pipeline_seconds_per_image_step"], ".4f")),
            ("rollout / pipeline (median of rounds)", _num(ro["ratio_to_pipeline"], ".3f", "x")),
            ("rollout peak memory", mem(ro["peak_memory_gib"])),
            ("pipeline peak memory", mem(ro["pipeline_peak_memory_gib"])),
        ]
    up = r["update"]
    if up:
        rows += [
            ("update: trained sample-steps (micro-batch x accumulation)",
             f"{up['trained_sample_steps']} ({up['micro_batch']} x {up['grad_accum']})"),
            ("update, s per trained sample-step (warm; first)",
             f"{_num(up['seconds_per_sample_step'], '.4f')}; {_num(up['first_seconds_per_sample_step'], '.4f')}"),
            ("update peak memory", mem(up["peak_memory_gib"])),
            (r"first update: largest \|ratio - 1\|", _num(up["ratio_max_abs_dev"], ".2e")),
            ("first update: gradient norm", _num(up["grad_norm"], ".3g")),
        ]
    fit = r["fit"]
    if fit:
        text = _num(fit["largest_fitting"], "d")
        if fit["smallest_failing"] is not None:
            text += f" ({fit['smallest_failing']} does not)"
        elif fit["stopped"] != "bracketed":
            text += f" (search stopped: {fit['stopped']})"
        if fit["extrapolated"] is not None and fit["smallest_failing"] is None:
            text += f"; peaks extrapolate to {fit['extrapolated']}"
        rows.append(("largest update micro-batch that fits", text))
    return rows


def markdown(result: dict) -> str:
    """The measurements as one table, a column per model."""
    names = list(result["models"])
    on_cuda = result["machine"].get("gpu") is not None
    where = (f"{result['machine']['gpu']}, torch {result['machine']['torch']}" if on_cuda
             else f"CPU ({result['machine']['cpu_threads']} threads), torch {result['machine']['torch']}")
    columns = {n: dict(_rows(result["models"][n], on_cuda)) for n in names}
    labels = list(dict.fromkeys(label for n in names for label, _ in _rows(result["models"][n], on_cuda)))
    lines = [f"`drift bench gpu` at scale {result['scale']} on {where}, {result['wall_seconds']:.0f} s in all; "
             "random weights, shipped run configurations.", "",
             "| | " + " | ".join(result["models"][n]["title"] for n in names) + " |",
             "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(columns[n].get(label, "") for n in names) + " |" for label in labels]
    return "\n".join(lines) + "\n"


__all__ = ["MODELS", "PHASES", "SCALES", "markdown", "pipeline_sample", "run", "search_largest"]
