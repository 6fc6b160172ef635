"""The one typed run configuration: every hyperparameter of a run lives here.

A YAML file is either this configuration itself or a ZenML run configuration that carries it
under ``parameters.config`` (so one file serves ``drift`` commands and ``zenml pipeline run``).
Validation errors name the field, the rule and the value given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from drift.errors import ConfigError


class _Section(BaseModel):
    # Attribute docstrings become the fields' descriptions in the JSON schema; NaN and infinity are
    # refused everywhere (a NaN weight would otherwise train a NaN model).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              allow_inf_nan=False)


DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$"


class RunSection(_Section):
    name: str = Field("drift", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Run name: the run directory under ``output_dir`` and, for `drift train`, what --resume resumes."""
    seed: int = Field(0, ge=0)
    """Seed of every random draw of the run (prompts, sample seeds, trained timesteps, LoRA init)."""
    output_dir: Path = Path(".state/runs")
    """Where run directories (checkpoints, metrics log, final model of `drift train`) are written."""
    resume: bool = True
    """The pipeline's fine-tuning step: take over an earlier run of this configuration whose process
    is gone (drift.training.run_folder): reuse its trained model when it finished (kept until its
    registered version is decided), else resume from its newest intact checkpoint. False trains afresh
    and removes those earlier runs' folders. (`drift train` resumes only with --resume.)"""
    device: str = Field("cpu", pattern=DEVICE_PATTERN)
    """torch device: cpu, cuda, cuda:N, mps or xpu (checked against the machine when the run starts)."""


class ModelOptions(_Section):
    """How the adapter drives its pipeline, beside the sampler's steps and noise: the keyword options
    of ``drift.models.load_model``."""

    height: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    """Image height in pixels; None uses the pipeline's default (1024 for FLUX.1-dev, FLUX.2, SD 3.5,
    Qwen-Image and Z-Image, 512 for SD 1.5). FLUX, Qwen-Image and Z-Image need a multiple of 16, and
    their scheduler shift follows the resolution."""
    width: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    """Image width in pixels; None uses the pipeline's default (see height)."""
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    """Guidance value fed to guidance-distilled denoisers as an input (FLUX.1-dev's and FLUX.2-dev's
    guidance embedding), not classifier-free guidance (that is sampling.guidance_scale); None uses the
    pipeline's default (3.5 FLUX.1, 4.0 FLUX.2). Ignored by denoisers without a guidance input."""
    max_sequence_length: int | None = Field(None, ge=1, le=4096)
    """Prompt tokens of the text encoder: the T5 length of SD 3 and FLUX.1, the padded length of FLUX.2
    and Z-Image, the cap on Qwen-Image's (at most 1024); None uses the pipeline's default (256 for
    SD 3, 512 for the others). FLUX.1 and FLUX.2 have no text attention mask, so padding to this length
    changes their conditioning as well as the attention cost. Ignored by families without such an
    encoder (SD 1.5)."""
    text_encoder_out_layers: tuple[int, ...] | None = Field(None, min_length=1, max_length=16)
    """Hidden states of the text encoder whose outputs, concatenated, form FLUX.2's conditioning (Python
    indices into the encoder's hidden states, 0 being the token embeddings); None uses the pipeline's
    default ((10, 20, 30) for FLUX.2-dev's Mistral encoder, (9, 18, 27) for FLUX.2 [klein]'s Qwen3).
    Set it for encoders shallower than that. Ignored by the other families, whose pipelines fix the
    layer (Qwen-Image the last, Z-Image the second to last)."""
    cfg_normalization: float | None = Field(None, ge=0.0, le=100.0)
    """Z-Image: classifier-free guidance's output is scaled down to at most this multiple of the
    conditional output's norm (ZImagePipeline's cfg_normalization); None or 0 leaves it as it is (the
    pipeline's default). Ignored by the other families."""
    cfg_truncation: float | None = Field(None, ge=0.0, le=1.0)
    """Z-Image: classifier-free guidance stops (the conditional output alone is used) once the
    denoising progress 1 - t/1000 exceeds this (ZImagePipeline's cfg_truncation); None is 1.0, guidance
    at every step (the pipeline's default). Ignored by the other families."""


class ModelSection(ModelOptions):
    source: str = Field(..., min_length=1)
    """Hub id (e.g. stabilityai/stable-diffusion-3.5-medium) or local directory of a diffusers pipeline."""
    family: Literal["auto", "flow", "eps"] = "auto"
    """Sampler family: 'flow' (rectified flow, Flow-GRPO SDE step), 'eps' (noise prediction, DDIM
    with eta), or 'auto' (from the pipeline's scheduler class)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to load; None for the default branch."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype of the frozen weights; trained weights and all step math stay in float32."""

    @property
    def options(self) -> ModelOptions:
        """The adapter options this section sets."""
        return ModelOptions(**{name: getattr(self, name) for name in ModelOptions.model_fields})


class SamplerSettings(_Section):
    """How images are drawn, as one value: passed whole to rollouts, evaluation, the labelling page
    and the registered model, and saved whole (``model_dump``) with a registered version, so that
    all of them sample the same way. Built from a run configuration by ``DriftConfig.sampler``."""

    model_config = ConfigDict(frozen=True)

    num_steps: int = Field(..., ge=1, le=1000)
    """T, denoising steps."""
    noise_level: float = Field(..., ge=0.0, le=10.0)
    """SDE noise level of the Flow-GRPO step, or DDIM's eta; 0 is the deterministic sampler."""
    guidance_scale: float = Field(1.0, ge=1.0)
    """Classifier-free guidance weight; 1 disables it."""
    negative_prompt: str = Field("", max_length=1000)
    """Prompt of the negative branch of classifier-free guidance."""
    model_options: ModelOptions = Field(default_factory=ModelOptions)
    """The options the model is loaded with (image size, guidance input, T5 length)."""


class DataSection(_Section):
    prompts: Path
    """Prompt CSV with columns ``prompt`` and ``split`` (DVC-versioned)."""
    train_split: str = "train"
    """Value of ``split`` that marks training prompts."""
    eval_split: str = "eval"
    """Value of ``split`` that marks held-out evaluation prompts."""
    min_prompt_length: int = Field(3, ge=1)
    """Shortest allowed prompt, in characters (after Unicode normalisation)."""
    max_prompt_length: int = Field(200, ge=1)
    """Longest allowed prompt, in characters."""
    min_rows_per_split: int = Field(5, ge=1)
    """Validation fails when a split has fewer prompts than this."""
    max_file_mb: float = Field(10.0, gt=0)
    """Prompt files larger than this are refused before reading (a wrong file, not a prompt set)."""

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_prompt_length > self.max_prompt_length:
            raise ValueError(f"min_prompt_length ({self.min_prompt_length}) exceeds max_prompt_length "
                             f"({self.max_prompt_length})")
        return self


class SdeWindowSection(_Section):
    """Which rollout steps are stochastic and trained: a window of ``size`` consecutive SDE steps,
    deterministic (ODE) steps elsewhere. Where the window starts is a function of (run seed,
    iteration), so every process and a resumed run use the same window."""

    size: int | None = Field(None, ge=1)
    """W, SDE steps per rollout; None (or W >= num_steps) makes every step stochastic and trainable."""
    placement: Literal["random", "fixed", "sliding"] = "random"
    """'random': the start is drawn uniformly from [start, max_start] each iteration; 'fixed': it is
    ``start``; 'sliding': it moves from ``start`` one step every ``slide_every`` iterations up to
    ``max_start``, then wraps back to ``start``."""
    start: int = Field(0, ge=0)
    """First step of the window (fixed), or the earliest start (random, sliding); 0 is the first,
    noisiest step."""
    max_start: int | None = Field(None, ge=0)
    """Latest start (random, sliding); None is num_steps - size, the last step's window."""
    slide_every: int = Field(1, ge=1)
    """Iterations between one-step moves of a sliding window."""


class SamplingSection(_Section):
    num_steps: int = Field(10, ge=1, le=1000)
    """T, denoising steps per rollout (and per evaluation sample)."""
    noise_level: float = Field(0.7, ge=0.0, le=10.0)
    """SDE noise level a of the Flow-GRPO step (std = a sqrt(sigma / (1 - sigma))), or DDIM's eta."""
    guidance_scale: float = Field(1.0, ge=1.0)
    """Classifier-free guidance weight w: out = out_neg + w (out_cond - out_neg), where out_neg is
    conditioned on negative_prompt (FluxPipeline's true CFG); 1 disables it. Guidance-distilled
    models (FLUX.1-dev) are sampled without it, with model.guidance as their guidance input."""
    negative_prompt: str = Field("", max_length=1000)
    """Prompt of the negative branch of classifier-free guidance ('' the empty prompt); used only
    when guidance_scale > 1."""
    group_size: int = Field(16, ge=2)
    """G, samples per prompt in a GRPO group (each with its own seed)."""
    prompts_per_iteration: int = Field(10, ge=1)
    """P, prompt groups per iteration: an iteration draws P * G samples."""
    batch_size: int = Field(256, ge=1)
    """Samples per denoiser call during rollouts (memory, not math)."""
    sde_window: SdeWindowSection = Field(default_factory=SdeWindowSection)
    """A window of SDE steps with deterministic steps elsewhere (see SdeWindowSection); the
    default, no window, samples and trains every step."""

    @model_validator(mode="after")
    def _window_fits(self):
        w = self.sde_window
        if w.size is None or w.size >= self.num_steps:
            return self
        last = self.num_steps - w.size
        if w.start > last:
            raise ValueError(f"sde_window.start ({w.start}) leaves no room for sde_window.size ({w.size}) in "
                             f"num_steps ({self.num_steps}) steps: at most {last}")
        if w.max_start is not None and not w.start <= w.max_start <= last:
            raise ValueError(f"sde_window.max_start ({w.max_start}) must lie in [sde_window.start, num_steps - "
                             f"sde_window.size] = [{w.start}, {last}]")
        return self


class RewardTerm(_Section):
    name: str
    """A registered reward (drift.registry.REWARDS): digit_margin, clip_score, pickscore, aesthetic, ..."""
    weight: float = 1.0
    """w_k in r = sum_k w_k r_k."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the reward's factory (checkpoint paths, model ids)."""


JUDGE_INSTRUCTION = ("The image was generated for the prompt: \"{prompt}\". Rate how well it matches the prompt and "
                     "how good it looks, from 1 (poor) to 5 (excellent). Answer with a single digit.")


class RemoteRewardSettings(_Section):
    """The arguments of the ``remote`` reward term, a reward served over HTTP (drift.scoring.remote).
    What decides the scores (protocol, model and version, the judge's instruction) enters the
    evaluation protocol; where the service runs and how it is called do not."""

    url: str = Field(..., pattern=r"^https?://[^\s/]+(/\S*)?$")
    """Base URL of the service: http://HOST:PORT for MLflow's scoring server (requests go to
    URL/invocations), the OpenAI base URL http://HOST:PORT/v1 for a chat endpoint
    (URL/chat/completions). A stopped run resumes only at the same URL."""
    protocol: Literal["mlflow", "chat"]
    """'mlflow': MLflow's scoring server (`mlflow models serve`), rows (prompt, image_png_base64) in
    batches, one score per row back; 'chat': an OpenAI-compatible chat completions endpoint (vLLM,
    SGLang) serving a vision-language judge, one image per request."""
    model: str = Field(..., min_length=1)
    """What is served. 'mlflow': the registered version, models:/NAME/VERSION (a version, not an
    alias: an alias moves, and the evaluation protocol must say which version scored). 'chat': the
    model name the server serves, sent as the request's model (e.g. Qwen/Qwen2.5-VL-7B-Instruct)."""
    revision: str | None = None
    """'chat': the revision (commit) the server loaded the judge at (vLLM's and SGLang's --revision),
    the model's version in the evaluation protocol; None leaves it unpinned there."""
    digest: str | None = None
    """'mlflow': the content digest the served model must report with every score (the registered
    version's reward.digest tag); set, answers from other weights stop the run."""
    format: Literal["split", "records"] = "split"
    """'mlflow': the pandas orientation of the request body (dataframe_split or dataframe_records)."""
    batch_size: int = Field(32, ge=1)
    """'mlflow': images per request ('chat' sends one image per request)."""
    concurrency: int = Field(4, ge=1)
    """Requests in flight at once."""
    timeout: float = Field(60.0, gt=0)
    """Seconds to wait for an answer before the attempt counts as failed."""
    retries: int = Field(5, ge=0)
    """Attempts after the first for a request that fails with a connection error, a timeout or HTTP
    408, 429 or 5xx; any other HTTP error stops the run at once."""
    backoff: float = Field(1.0, ge=0)
    """Seconds before the first retry, doubled before each next one (1 s and 5 retries: 31 s in all)."""
    auth_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the environment variable that holds the credential sent in auth_header (the
    credential itself never belongs in a configuration); None sends none."""
    auth_header: str = Field("Authorization", min_length=1)
    """The header that carries the credential."""
    auth_scheme: str = "Bearer"
    """Written before the credential in the header ('Bearer TOKEN'); '' sends the credential alone."""
    instruction: str = Field(JUDGE_INSTRUCTION, min_length=1)
    """'chat': the scoring instruction sent after the image; {prompt} stands for the image's prompt."""
    score_from: Literal["logprobs", "answer"] = "logprobs"
    """'chat': 'logprobs' scores the expected rating under the probabilities of the rating tokens at
    the first answer token that is one (a continuous score, fewer ties within a group); 'answer'
    the first number in the answer."""
    ratings: dict[str, float] = Field(default_factory=lambda: {str(k): float(k) for k in range(1, 6)}, min_length=2)
    """'chat' with 'logprobs': the rating tokens and their values."""
    top_logprobs: int = Field(20, ge=1, le=20)
    """'chat' with 'logprobs': alternatives asked for per answer token (vLLM allows 20 by default)."""
    max_tokens: int = Field(8, ge=1)
    """'chat': the longest answer, in tokens."""

    @field_validator("model")
    @classmethod
    def _version_named(cls, model: str, info: ValidationInfo) -> str:
        if info.data.get("protocol") == "mlflow" and not re.fullmatch(r"models:/[^/@]+/\d+", model):
            raise ValueError("with protocol mlflow, name a registered version, models:/NAME/VERSION: an alias "
                             "moves, and the evaluation protocol must say which version scored")
        return model


class EmbeddingSection(_Section):
    name: str = "pixels"
    """A registered embedding f (drift.registry.EMBEDDINGS). As the run's ``embedding``: the one
    diversity and coverage are measured in (the evaluation's headline figures, the promotion gate's
    diversity floor, the rollouts' logged diversity), and the shaping potential's unless
    drift.shaping.embedding names another."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the embedding's factory."""


class LoraSection(_Section):
    enabled: bool = False
    """Train LoRA adapters instead of the whole denoiser (the reference policy is the adapters off)."""
    rank: int = Field(8, ge=1)
    """LoRA rank r."""
    alpha: float = Field(8.0, gt=0)
    """LoRA alpha (the update is scaled by alpha / r)."""
    target_modules: list[str] | str = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """The denoiser's linear layers that get adapters, in either of peft's forms: a list of name
    suffixes (``to_q`` adapts every ``...attn.to_q``), or one regular expression that whole module
    names must match (for layers whose suffix other, non-linear modules share)."""

    @field_validator("target_modules")
    @classmethod
    def _compiles(cls, value):
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from None
        return value


class TrainSection(_Section):
    iterations: int = Field(40, ge=1)
    """Training iterations (rollout + update); the only field a resumed run may change."""
    lr: float = Field(3e-4, gt=0, le=1.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    clip_range: float = Field(1e-3, gt=0, le=1.0)
    """epsilon of the PPO clip: the ratio rho is clipped to [1 - epsilon, 1 + epsilon]."""
    adv_clip: float = Field(5.0, gt=0)
    """Advantages are clipped to [-adv_clip, adv_clip] after group normalisation."""
    kl_coef: float = Field(0.0, ge=0)
    """beta of the KL penalty to the reference (base) policy's step distribution; 0 disables it."""
    timestep_fraction: float = Field(1.0, gt=0, le=1.0)
    """Fraction of the trainable steps (all T, or the SDE window's W) each micro-batch trains on,
    drawn at random: max(1, round(fraction * steps)) of them; see trained_steps."""
    trained_steps: int | None = Field(None, ge=1)
    """Trained-step budget: exactly this many trainable steps per micro-batch (fewer if the window
    is smaller), instead of timestep_fraction; None uses timestep_fraction."""
    inner_epochs: int = Field(1, ge=1)
    """Passes over an iteration's samples per update."""
    micro_batch: int = Field(64, ge=1)
    """Samples per backward pass."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradients are clipped to this global norm."""
    ema_decay: float = Field(0.0, ge=0, lt=1.0)
    """Decay of an exponential moving average of the trained weights, used for evaluation and the
    saved model; 0 disables EMA."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more compute)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """accelerate's mixed precision for the denoiser's forward and backward passes (autocast);
    trained weights, optimizer state and step math stay float32."""
    lora: LoraSection = Field(default_factory=LoraSection)
    """LoRA adapters (see LoraSection)."""


class SubsetSection(_Section):
    """DRIFT component 1: update only on a reward-concentrated subset of each group."""

    enabled: bool = False
    """Turn the subset on; off, every sample of a group is updated on."""
    mode: Literal["window", "zscore"] = "window"
    """'window': keep the k = ceil(keep_ratio G) sorted rewards with the smallest range;
    'zscore': keep samples with |r_i - mean| <= z_max std."""
    keep_ratio: float = Field(0.75, gt=0, le=1.0)
    """k / G for the window mode."""
    z_max: float = Field(1.0, gt=0)
    """z_max for the zscore mode."""


class CorpusSection(_Section):
    """A prompt corpus: captions whose embeddings say how prompts differ in the conditioning space."""

    name: str = Field(..., min_length=1)
    """A registered corpus (drift.registry.CORPORA): testbed_captions (every caption the testbed's
    base model was pretrained on, grouped by phrasing) or prompt_file (the prompts of a prompt CSV,
    grouped by a column if given, e.g. rewrites of each training prompt for a real model)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the corpus's factory (e.g. path, split)."""


class PromptNoiseSection(_Section):
    """DRIFT component 2: annealed noise on the prompt embeddings during rollouts."""

    enabled: bool = False
    """Turn prompt noise on."""
    form: Literal["cads", "additive", "anchored"] = "cads"
    """How the noise n perturbs the prompt embedding y, with g the annealing weight
    (drift.method.prompt_noise.perturb): 'cads' y' = sqrt(g) y + s sqrt(1 - g) n (the prompt is
    replaced by noise where g = 0 unless floor > 0); 'additive' y' = y + s sqrt(1 - g) n (keeps the
    prompt); 'anchored' y' = y + (1 - g) s rms(y) n (a perturbation within s times the prompt's
    RMS, blended back to the prompt as tau falls)."""
    floor: float = Field(0.0, ge=0, lt=1.0)
    """Lower bound on the annealing weight g, so that the CADS form keeps at least sqrt(floor) of
    the prompt at every tau; 0 for none."""
    scale: float = Field(0.25, ge=0)
    """s, the noise scale at the start of training."""
    tau1: float = Field(0.6, ge=0, le=1.0)
    """tau1: at denoising times tau <= tau1 (late steps) the conditioning is the clean prompt (g = 1)."""
    tau2: float = Field(0.9, ge=0, le=1.0)
    """tau2: at tau >= tau2 (early steps) the annealing weight g is 0; linear in between."""
    directions: Literal["isotropic", "principal"] = "isotropic"
    """Where the noise n lies: 'isotropic', standard normal in every entry of the embedding;
    'principal', confined to the ``components`` leading principal directions in which the captions
    of one group of ``corpus`` differ, and scaled to their spread along each, n' = V^T diag(sd) V n
    (drift.method.prompt_noise.confine): it moves a prompt the way captions of one subject differ
    (on the testbed: by attribute words), not toward another subject."""
    components: int = Field(3, ge=1)
    """K, the principal directions kept with directions 'principal'."""
    corpus: CorpusSection | None = None
    """The captions the principal directions are estimated from, in groups that share a subject
    (required with directions 'principal'); encoded once by the model's own text encoders when a run
    starts."""
    rescale: bool = False
    """Rescale the noisy embedding to the clean one's per-sample mean and std."""
    psi: float = Field(1.0, ge=0, le=1.0)
    """psi: mix of the rescaled (psi) and unrescaled (1 - psi) noisy embedding when rescale is on."""
    final_scale: float = Field(0.0, ge=0)
    """s at the end of the decay over training iterations."""
    decay_iterations: int = Field(0, ge=0)
    """Iterations over which s decays linearly to final_scale; 0 keeps s constant."""

    @model_validator(mode="after")
    def _ordered(self):
        if self.tau1 >= self.tau2:
            raise ValueError(f"tau1 ({self.tau1}) must be smaller than tau2 ({self.tau2})")
        if self.directions == "principal" and self.corpus is None:
            raise ValueError("directions 'principal' needs a corpus to estimate them from "
                             "(e.g. corpus: {name: testbed_captions})")
        return self


class ShapingSection(_Section):
    """DRIFT component 3: potential-based reward shaping toward intra-group diversity."""

    enabled: bool = False
    """Turn diversity shaping on."""
    mode: Literal["terminal", "dense"] = "terminal"
    """'terminal': r'_i = r_i + lambda std_g(r) Phi_i; 'dense': per-step terms
    F_t = gamma Phi(x0_hat_{t+1}) - Phi(x0_hat_t) on the predicted clean samples."""
    weight: float = Field(1.0, ge=0)
    """lambda at the start of training, in units of the reward standard deviation of the samples
    in `over` (scale-free)."""
    final_weight: float = Field(0.0, ge=0)
    """lambda at the end of the schedule over training iterations (see weight_iterations)."""
    weight_iterations: int = Field(0, ge=0)
    """Iterations over which lambda moves linearly from weight to final_weight, constant
    afterwards; 0 keeps lambda = weight throughout."""
    gamma: float = Field(1.0, gt=0, le=1.0)
    """gamma of the dense shaping terms (1: they telescope to the terminal bonus)."""
    gate: Literal["none", "mean", "drive"] = "none"
    """Who receives the bonus: 'none' every sample; 'mean' only samples whose reward is at least the
    mean of `over`, the potential normalised over all of `over`; 'drive' the same samples, with the
    potential min-max normalised over them only (as in DRIVE). true / false read as 'mean' / 'none'."""
    embedding: EmbeddingSection | None = None
    """The embedding f the potential is computed on; None uses the run's `embedding` (the one
    diversity is measured in). Another one (a dedicated feature model) keeps the bonus from acting
    on the very features the reward is read from."""
    over: Literal["group", "kept"] = "group"
    """Samples whose rewards set the bonus's spread and the gate's mean, and over which the
    potential is normalised: the whole group, or the subset kept by component 1 (the samples whose
    advantages are normalised; the same as the group when the subset is off)."""

    @field_validator("gate", mode="before")
    @classmethod
    def _boolean_gate(cls, value):
        return {True: "mean", False: "none"}.get(value, value) if isinstance(value, bool) else value


class DriftSection(_Section):
    subset: SubsetSection = Field(default_factory=SubsetSection)
    """Component 1, the reward-concentrated subset."""
    prompt_noise: PromptNoiseSection = Field(default_factory=PromptNoiseSection)
    """Component 2, annealed prompt-embedding noise."""
    shaping: ShapingSection = Field(default_factory=ShapingSection)
    """Component 3, potential-based diversity shaping."""


class CoverageSection(_Section):
    """Coverage of the real data: precision, recall (Kynkaanniemi et al. 2019) and the Frechet
    distance of each class's evaluation samples against the real images of that class, in the
    run's embedding space (drift.scoring.coverage)."""

    name: str = Field(..., min_length=1)
    """A registered reference set (drift.registry.REFERENCES): real images per class and the class
    each prompt asks for, e.g. digit_images."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the reference set's factory (e.g. images: data/testbed/digits.npz)."""
    k: int = Field(3, ge=1)
    """k of the k-nearest-neighbour manifolds of precision and recall."""


class EvalSection(_Section):
    every: int = Field(10, ge=0)
    """Iterations between evaluations during training; 0 evaluates only at the start and the end."""
    num_prompts: int = Field(10, ge=1)
    """Held-out prompts evaluated (the first ones of the eval split)."""
    samples_per_prompt: int = Field(16, ge=2)
    """Seeded samples per evaluation prompt."""
    seed: int = Field(1234, ge=0)
    """Seed of the fixed evaluation seeds (disjoint from training seeds)."""
    noise_level: float | None = Field(None, ge=0.0)
    """Sampler noise for evaluation (seeded, so still reproducible); None uses sampling.noise_level,
    0 the deterministic sampler."""
    coverage: CoverageSection | None = None
    """Coverage metrics against real data per class; None (the default) skips them."""
    embeddings: dict[str, EmbeddingSection] = Field(default_factory=dict)
    """Further embeddings the evaluation reports diversity, Vendi score and coverage in, beside the
    run's ``embedding``, by a label of lowercase letters, digits and underscores: their figures are
    the metrics '<label>/diversity', '<label>/vendi', '<label>/precision', ... (e.g. the reward
    model's own features and pixels, to see what the shaping term moves)."""

    @field_validator("embeddings")
    @classmethod
    def _labels(cls, value):
        for label in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", label) or label == "reward":
                raise ValueError(f"embedding label {label!r} must be lowercase letters, digits and underscores, "
                                 "start with a letter, and not be 'reward'")
        return value


class CheckpointSection(_Section):
    every: int = Field(0, ge=0)
    """Iterations between checkpoints; 0 checkpoints only at the end."""
    keep_last: int = Field(2, ge=0)
    """Intact checkpoints kept per run (older ones are deleted); 0 keeps all."""


class AccelerateSection(_Section):
    """How the pipeline's fine-tuning step runs: in the step's own process, or on several processes
    under `accelerate launch` (mlops.finetuning; `drift train` gets the same from `accelerate launch`)."""

    num_processes: int = Field(1, ge=1)
    """Processes the fine-tuning step launches (one per GPU); 1 trains in the step's own process."""
    config_file: Path | None = None
    """An accelerate config file for the launch: configs/accelerate/ddp.yaml, fsdp.yaml or
    deepspeed_zero2.yaml; None launches plain data parallelism (DDP)."""


class RegistrySection(_Section):
    """The registered model, the promotion gate (drift.evaluation.promotion) and the promotion lock
    (mlops.promotion_lock). The gate compares the candidate with the champion sample by sample under the
    candidate's evaluation protocol (the champion is evaluated again when it was measured otherwise)
    and reads each figure's paired bootstrap interval at ``confidence``."""

    model_name: str = Field("drift-digits", min_length=1)
    """MLflow registered model name."""
    min_diversity_fraction: float = Field(0.5, ge=0, le=10.0)
    """Promotion needs diversity >= this fraction of the reference (base) model's."""
    max_alignment_drop: float = Field(0.0, ge=0)
    """How far below the champion's the candidate's alignment may lie: a candidate whose whole
    interval of the difference lies below minus this (reward units) is not promoted."""
    max_diversity_drop: float = Field(0.0, ge=0)
    """The same for diversity (mean pairwise cosine distance)."""
    protected_terms: list[str] | None = None
    """Reward terms that must not regress against the champion; None protects every term of the
    champion's own protocol, so that adding a reward term cannot buy a promotion."""
    max_term_drop: float = Field(0.0, ge=0)
    """The same for each protected term (absolute, in the term's units)."""
    min_alignment_gain: float = Field(0.0, ge=0)
    """Promotion needs alignment or diversity better than the champion's: the lower end of the
    alignment difference's interval above this (reward units) ..."""
    min_diversity_gain: float = Field(0.0, ge=0)
    """... or the lower end of the diversity difference's interval above this. With both at 0 a
    candidate must be better beyond the noise; a tie keeps the champion."""
    confidence: float = Field(0.9, ge=0.5, lt=1.0)
    """Level of the bootstrap intervals the gates read (0.9: each end is a one-sided 95% bound)."""
    bootstrap_resamples: int = Field(2000, ge=100, le=100_000)
    """Bootstrap resamples of the evaluation's prompts and seeds (of the held-out pairs, for the
    reward head); the draws are seeded, so a decision is reproducible."""
    lock_timeout: float = Field(600.0, gt=0)
    """Seconds a run waits for the promotion lock before it fails; its registered version then stays
    undecided until the next run (or `drift registry decide`) decides it."""
    lock_stale_after: float = Field(120.0, ge=1.0)
    """Seconds without a heartbeat (on the registry server's clock) after which a lock is taken to be
    left by a dead holder and broken; the holder refreshes it every quarter of this. A holder on this
    machine whose process is gone is broken at once."""


class PreferenceSection(_Section):
    """Retraining on preference data: the pairs, the Bradley-Terry reward head, and its weight in
    the generator's reward (added to the run's reward terms)."""

    pairs: Path = Path("data/preferences/pairs.csv")
    """The preference pairs CSV (format in drift.data.preferences)."""
    reward_model_name: str = Field("drift-digits-reward", min_length=1)
    """MLflow registered model name of the preference reward head."""
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of pairs held out (by a hash of the pair id) to measure the head's accuracy."""
    epochs: int = Field(300, ge=1)
    """Full-batch AdamW epochs of the Bradley-Terry fit."""
    lr: float = Field(0.05, gt=0)
    """Learning rate of the Bradley-Terry fit."""
    weight: float = Field(1.0, ge=0)
    """Weight of the preference reward in the generator's reward."""
    start_from: Literal["base", "champion"] = "base"
    """What the generator's retraining fine-tunes: the base model (model.source), or the registered
    champion of registry.model_name (its trained weights, on the same base: each batch of preferences
    then builds on the model the last one promoted; with train.kl_coef the update is held near it).
    The champion must be a full fine-tune (train.lora.enabled: false)."""
    min_accuracy_gain: float = Field(0.0, ge=0, lt=1)
    """A new head is registered only when the lower end of the interval of its held-out accuracy
    minus the champion head's (same pairs; registry.confidence) is above this: equal accuracy keeps
    the champion head."""
    embedding: EmbeddingSection | None = None
    """The features the head is fitted on (and scores images with); None uses the run's
    ``embedding``. The head is a reward term: on the testbed it reads the classifier's features, so
    that the evaluation embedding stays one that no reward reads."""


class DriftConfig(_Section):
    """A whole run; each section's fields are documented where the section is defined."""

    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection
    data: DataSection
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    reward: list[RewardTerm] = Field(..., min_length=1)
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection)
    train: TrainSection = Field(default_factory=TrainSection)
    drift: DriftSection = Field(default_factory=DriftSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    accelerate: AccelerateSection = Field(default_factory=AccelerateSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)
    preferences: PreferenceSection | None = None

    @model_validator(mode="after")
    def _start_from(self) -> DriftConfig:
        if self.preferences is not None and self.preferences.start_from == "champion" and self.train.lora.enabled:
            raise ValueError("preferences.start_from: champion continues a full fine-tune; LoRA adapters cannot be "
                             "trained on from a registered version yet (set train.lora.enabled: false, or "
                             "preferences.start_from: base)")
        return self

    @property
    def method_name(self) -> str:
        """'grpo', or 'drift[...]' listing the DRIFT components that are on."""
        d = self.drift
        components = (("subset", d.subset), ("prompt_noise", d.prompt_noise), ("shaping", d.shaping))
        on = [name for name, section in components if section.enabled]
        return f"drift[{','.join(on)}]" if on else "grpo"

    def without_drift(self) -> DriftConfig:
        """The same run with the three DRIFT components off: plain GRPO, the baseline."""
        return self.with_overrides({f"drift.{c}.enabled": False for c in ("subset", "prompt_noise", "shaping")})

    def preference_term(self, head_dir: str | Path) -> RewardTerm:
        """The learned preference score as a reward term (weight preferences.weight, on the
        embedding the head was fitted on)."""
        return RewardTerm(name="preference", weight=self.preferences.weight,
                          args={"head": str(head_dir), "embedding": self.preference_embedding.name,
                                "embedding_args": self.preference_embedding.args})

    def with_preference_reward(self, head_dir: str) -> DriftConfig:
        """This configuration with the learned preference score added to its reward terms."""
        data = self.model_dump(mode="json")
        data["reward"] = data["reward"] + [self.preference_term(head_dir).model_dump(mode="json")]
        return parse_config(data, source="retraining configuration")

    @property
    def preference_embedding(self) -> EmbeddingSection:
        """The embedding the preference head is fitted on: preferences.embedding, else the run's."""
        chosen = self.preferences.embedding if self.preferences is not None else None
        return self.embedding if chosen is None else chosen

    @property
    def eval_noise_level(self) -> float:
        return self.sampling.noise_level if self.eval.noise_level is None else self.eval.noise_level

    def sampler(self, evaluation: bool = False) -> SamplerSettings:
        """The sampler settings of training rollouts, or with ``evaluation`` of the evaluation
        protocol (eval.noise_level where set)."""
        s = self.sampling
        return SamplerSettings(num_steps=s.num_steps,
                               noise_level=self.eval_noise_level if evaluation else s.noise_level,
                               guidance_scale=s.guidance_scale, negative_prompt=s.negative_prompt,
                               model_options=self.model.options)

    def with_overrides(self, overrides: dict[str, Any]) -> DriftConfig:
        """A copy with dotted-key overrides applied ({'train.iterations': 5}), validated again."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return parse_config(data, source="overrides")


def _flatten(data, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


RESUMABLE_CHANGES = ("train.iterations", "run.resume", "registry")
"""What may change when a run resumes: the iteration budget, and what does not touch training."""


def config_differences(saved: dict, current: dict, allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """Dotted fields whose values differ between two dumped configurations, as 'field: a -> b'
    (fields in ``allowed``, and the fields of sections in it, are ignored). A field added since
    ``saved`` was written compares at its default."""
    try:
        saved = DriftConfig.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        pass  # compared as written: every field it lacks or spells otherwise is reported
    a, b = _flatten(saved), _flatten(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if not any(k == f or k.startswith(f + ".") for f in allowed) and a.get(k) != b.get(k)]


def describe_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        lines.append(f"  {loc}: {e['msg']}{got}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> DriftConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping at the top level")
    if "parameters" in data and isinstance(data["parameters"], dict) and "config" in data["parameters"]:
        data = data["parameters"]["config"]
    try:
        return DriftConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DriftConfig:
    """Read and validate a YAML configuration; relative data/model paths stay relative to the CWD."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"configuration file {path} is not valid YAML: {err}") from None
    config = parse_config(data, source=str(path))
    return config.with_overrides(overrides) if overrides else config


class ClassifierParams(_Section):
    epochs: int = Field(30, ge=1)
    """Training epochs of the digit classifier (reward and feature model)."""
    lr: float = Field(2e-3, gt=0)
    """Its AdamW learning rate (cosine schedule)."""


class BaseModelParams(_Section):
    steps: int = Field(1000, ge=1)
    """Flow-matching steps of the base model's pretraining."""
    batch_size: int = Field(128, ge=1)
    """Images per pretraining step."""
    lr: float = Field(2e-3, gt=0)
    """Peak learning rate (one-cycle schedule)."""
    ema_decay: float = Field(0.995, ge=0, lt=1)
    """Decay of the EMA whose weights are saved."""
    cond_dropout: float = Field(0.1, ge=0, lt=1)
    """Share of empty-prompt captions, so that classifier-free guidance works."""
    attribute_rate: float = Field(0.5, ge=0, le=1)
    """Probability that a caption names each of its image's attributes (drift.testbed.attributes:
    thickness, slant, size), so that the conditioning space has neighbours with meaning; 0 gives
    captions that name only the digit."""


class EncoderParams(_Section):
    steps: int = Field(500, ge=1)
    """Contrastive training steps of the evaluation encoder (drift.testbed.encoder)."""
    batch_size: int = Field(256, ge=2)
    """Images per step (two views each)."""
    lr: float = Field(2e-3, gt=0)
    """Its AdamW learning rate."""
    temperature: float = Field(0.2, gt=0)
    """Temperature of the NT-Xent loss."""
    feature_dim: int = Field(32, ge=1)
    """Dimensions of the encoder's features (the evaluation embedding)."""


class TestbedParams(_Section):
    """The ``testbed`` section of params.yaml: how ``dvc repro`` builds the digits testbed."""

    seed: int = Field(0, ge=0)
    """Seed of the data split, the classifier and the pretraining."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of images held out to measure the classifier's accuracy."""
    threads: int = Field(2, ge=1)
    """torch threads of the classifier's, the base model's and the encoder's training. A float result depends on
    the thread count, so it is fixed here rather than taken from the machine's cores."""
    classifier: ClassifierParams = Field(default_factory=ClassifierParams)
    """The digit classifier."""
    base_model: BaseModelParams = Field(default_factory=BaseModelParams)
    """The base text-to-image model."""
    encoder: EncoderParams = Field(default_factory=EncoderParams)
    """The evaluation encoder: the embedding diversity and coverage are measured in."""


def load_testbed_params(path: str | Path) -> TestbedParams:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameters file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return TestbedParams.model_validate(data.get("testbed", {}))
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, f"{path} (section testbed)")) from None


class BenchConfig(_Section):
    """What every benchmark config (configs/bench/*.yaml) holds: the base run configuration and each
    method as overrides of it, trained on the same seeds."""

    base_config: Path
    """The run configuration every method starts from (a `drift train` YAML file)."""
    base_overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted-key overrides of ``base_config`` shared by every method ({'sampling.group_size': 8})."""
    methods: dict[str, dict[str, Any]] = Field(..., min_length=2)
    """Each method by name, as dotted-key overrides of the base run configuration."""
    baseline: str = "grpo"
    """The method the others are compared with: one of ``methods``."""
    iterations: int = Field(60, ge=1)
    """The training budget every comparison is made at."""
    eval_every: int = Field(5, ge=1)
    """Iterations between held-out evaluations: the checkpoints of every trajectory."""

    @model_validator(mode="after")
    def _known_baseline(self):
        if self.baseline not in self.methods:
            raise ValueError(f"baseline '{self.baseline}' is not one of the methods ({', '.join(self.methods)})")
        return self

    def run_config(self, base: DriftConfig, method: str, seed: int) -> DriftConfig:
        """The run configuration of one method and seed: the base plus the method's overrides."""
        return base.with_overrides({**self.methods[method], "run.seed": seed, "train.iterations": self.iterations,
                                    "eval.every": self.eval_every})


class ParetoBenchConfig(BenchConfig):
    """`drift bench pareto`: every method on the same budget, compared at matched levels, and where
    it reaches fractions of the baseline's final alignment."""

    levels: int = Field(5, ge=1)
    """Matched levels per comparison, evenly spaced inside the range both trajectories cover."""
    reach_fractions: list[float] = Field(default_factory=lambda: [0.9, 1.0], min_length=1)
    """Levels, as fractions of the baseline's final alignment (same seed), where each method's
    iterations, diversity and coverage are reported; each in (0, 1.5]."""
    max_iterations: int | None = Field(None, ge=1)
    """Methods that have not reached the highest reach level after ``iterations`` train on,
    ``eval_every`` iterations at a time, until they do or reach this cap; None: no extension."""

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_iterations is not None and self.max_iterations < self.iterations:
            raise ValueError(f"max_iterations ({self.max_iterations}) is below iterations ({self.iterations})")
        if any(not 0 < f <= 1.5 for f in self.reach_fractions):
            raise ValueError(f"reach_fractions must lie in (0, 1.5], got {self.reach_fractions}")
        return self


class EfficiencyBenchConfig(BenchConfig):
    """`drift bench efficiency`: as the Pareto benchmark's, where a method may set its own
    ``train.iterations`` (a cheaper method can run longer), plus the rollout timing."""

    timing_method: str | None = None
    """The windowed method whose rollout is timed against the plain sampler (None: no timing)."""
    timing_repeats: int = Field(5, ge=1)
    """Rounds of timed rollouts (one of each sampler per round, after a warm-up round)."""

    @model_validator(mode="after")
    def _known_timing_method(self):
        if self.timing_method is not None and self.timing_method not in self.methods:
            raise ValueError(f"timing_method '{self.timing_method}' is not one of the methods "
                             f"({', '.join(self.methods)})")
        return self

    def run_config(self, base: DriftConfig, method: str, seed: int) -> DriftConfig:
        cfg = super().run_config(base, method, seed)
        own = self.methods[method].get("train.iterations")
        return cfg if own is None else cfg.with_overrides({"train.iterations": own})


def load_bench_config(path: str | Path, overrides: dict[str, Any] | None = None,
                      schema: type[BenchConfig] = ParetoBenchConfig) -> tuple[BenchConfig, DriftConfig]:
    """A benchmark config (a ``schema``) and its validated base run config; every method's
    overrides are validated up front, so a typo fails before hours of training."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark configuration {path} does not exist")
    try:
        bench = schema.model_validate({**(yaml.safe_load(path.read_text()) or {}), **(overrides or {})})
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, str(path))) from None
    base = load_config(bench.base_config, bench.base_overrides)
    for name in bench.methods:
        try:
            bench.run_config(base, name, seed=0)
        except ConfigError as err:
            raise ConfigError(f"method '{name}' in {path}: {err}") from None
    return bench, base
