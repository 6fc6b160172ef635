"""`drift bench prompt-noise`: what each form of prompt noise does to the base model's samples,
before any training, and how far apart the prompts are in the conditioning space.

Every form and scale samples the same held-out prompts with the same seeds, sampler and noise
schedule (tau1, tau2 from the run config); only the conditioning differs. The distances say what a
scale means: the per-entry standard deviation of the prompt embeddings, and the RMS distance
between two prompts naming the same class (two phrasings of one digit) and different classes.
With a corpus in drift.prompt_noise.corpus, the noise confined to its principal directions is
measured too, and how far each kind of noise reaches toward the attribute words' neighbours
(``attribute_reach``).
"""

from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path
from statistics import fmean

import torch

from drift.build import build_parts
from drift.config import DriftConfig
from drift.errors import ConfigError
from drift.evaluation.protocol import evaluate, reference_set
from drift.method.prompt_noise import confine
from drift.registry import CORPORA
from drift.sampling.rollout import PromptNoise, prompt_directions
from drift.testbed.attributes import ATTRIBUTES

# (form, floor, directions): the three forms of DESIGN.md, CADS also with a floor on g, with isotropic
# noise; the additive form and CADS with a floor also with noise on a corpus's principal directions.
FORMS = (("cads", 0.0, "isotropic"), ("cads", 0.5, "isotropic"), ("additive", 0.0, "isotropic"),
         ("anchored", 0.0, "isotropic"), ("additive", 0.0, "principal"), ("cads", 0.5, "principal"))
METRICS = ("alignment", "diversity", "precision", "recall", "frechet")


def prompt_distances(embeds: torch.Tensor, classes: list) -> dict[str, float]:
    """Per-entry std of the token embeddings (P, L, D), and the mean RMS distance between two
    prompts of the same class and of different classes."""
    same, other = [], []
    for i, j in combinations(range(len(classes)), 2):
        rms = float((embeds[i] - embeds[j]).pow(2).mean().sqrt())
        (same if classes[i] == classes[j] else other).append(rms)
    return {"entry_std": float(embeds.std()), "rms_same_class": fmean(same) if same else float("nan"),
            "rms_other_class": fmean(other) if other else float("nan")}


@torch.no_grad()
def attribute_reach(model, prompts: list[str], directions: dict | None, draws: int = 64) -> dict[str, float]:
    """How far noise of scale 1 reaches toward the neighbours the attribute words name: for each
    prompt and each attribute word w (drift.testbed.attributes), the direction u = e(prompt w) -
    e(prompt) of the token embeddings; the mean norm of u, of the noise n (isotropic, or confined to
    ``directions``), and of n's projection on u / |u|, over ``draws`` draws per pair."""
    words = [w for _, ws in ATTRIBUTES for w in ws]
    plain = model.encode(prompts).embeds.float().cpu()
    moved = model.encode([f"{p} {w}" for p in prompts for w in words]).embeds.float().cpu()
    u = (moved.reshape(len(prompts), len(words), -1) - plain.flatten(1)[:, None]).flatten(0, 1)
    n = torch.randn(draws, *plain.shape[1:], generator=torch.Generator().manual_seed(0))
    if directions is not None:
        n = confine(n, directions["embeds"])
    n = n.flatten(1)
    projection = (n @ torch.nn.functional.normalize(u, dim=1).T).abs()
    return {"word_norm": float(u.norm(dim=1).mean()), "noise_norm": float(n.norm(dim=1).mean()),
            "projection": float(projection.mean())}


def run(cfg: DriftConfig, out_dir: str | Path, scales: list[float], num_prompts: int = 10,
        samples_per_prompt: int = 48) -> dict:
    """Measure the clean prompt and every (form, floor) x scale; writes prompt_noise.md and .json."""
    if cfg.eval.coverage is None:
        raise ConfigError("eval.coverage: the prompt-noise probe needs the real images per class")
    start = time.perf_counter()
    parts = build_parts(cfg)
    reference = reference_set(cfg.eval.coverage.name, json.dumps(cfg.eval.coverage.args, sort_keys=True))
    prompts = parts.eval_prompts[:num_prompts]
    s, pn = cfg.sampling, cfg.drift.prompt_noise

    def measure(noise: PromptNoise | None) -> dict[str, float]:
        e = evaluate(parts.model, parts.reward, parts.embed, prompts, samples_per_prompt, cfg.eval.seed, cfg.sampler(),
                     batch_size=s.batch_size, coverage=(reference, cfg.eval.coverage.k), prompt_noise=noise)
        return {k: e.metrics[k] for k in METRICS}

    found = {"isotropic": None}
    if pn.corpus is not None:
        found["principal"] = prompt_directions(parts.model, CORPORA.build(pn.corpus.name, **pn.corpus.args),
                                               pn.components)
    rows = [{"form": "clean prompt", "floor": None, "scale": None, "directions": None, **measure(None)}]
    for form, floor, directions in [f for f in FORMS if f[2] in found]:
        for scale in scales:
            noise = PromptNoise(scale=scale, tau1=pn.tau1, tau2=pn.tau2, form=form, floor=floor,
                                directions=found[directions])
            rows.append({"form": form, "floor": floor, "scale": scale, "directions": directions, **measure(noise)})
            print(f"[{time.perf_counter() - start:5.0f} s] {form} floor {floor} scale {scale} {directions}",
                  flush=True)
    with torch.no_grad():
        distances = prompt_distances(parts.model.encode(parts.train_prompts).embeds.float().cpu(),
                                     [reference.classify(p) for p in parts.train_prompts])
    reach = {name: attribute_reach(parts.model, prompts, d) for name, d in found.items()}
    result = {"rows": rows, "distances": distances, "reach": reach, "components": pn.components,
              "corpus": None if pn.corpus is None else pn.corpus.name,
              "prompts": len(prompts), "samples_per_prompt": samples_per_prompt,
              "seed": cfg.eval.seed, "tau1": pn.tau1, "tau2": pn.tau2, "noise_level": s.noise_level,
              "wall_seconds": time.perf_counter() - start}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompt_noise.json").write_text(json.dumps(result, indent=2))
    (out / "prompt_noise.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    d = result["distances"]

    def label(directions: str) -> str:
        return directions if directions == "isotropic" else \
            f"{directions} ({result['components']} directions of {result['corpus']})"

    lines = [f"Base model, {result['prompts']} held-out prompts x {result['samples_per_prompt']} seeds, prompt noise "
             f"between tau1 {result['tau1']} and tau2 {result['tau2']}. Prompt embeddings: per-entry std "
             f"{d['entry_std']:.2f}; RMS distance between two prompts of one class {d['rms_same_class']:.2f}, "
             f"of different classes {d['rms_other_class']:.2f}.",
             "", "How far noise of scale 1 reaches toward the attribute words' neighbours (mean norms of the "
             "move an attribute word makes, of the noise, and of the noise's projection on that move):", "",
             "| noise | word's move | noise | projection on the move |", "|---|---|---|---|",
             *[f"| {label(name)} | {r['word_norm']:.2f} | {r['noise_norm']:.2f} | {r['projection']:.2f} |"
               for name, r in result["reach"].items()], "",
             "| form | floor | directions | scale | " + " | ".join(METRICS) + " |", "|---" * (4 + len(METRICS)) + "|"]
    for r in result["rows"]:
        cells = [r["form"], "-" if r["floor"] is None else f"{r['floor']:g}", r["directions"] or "-",
                 "-" if r["scale"] is None else f"{r['scale']:g}"]
        cells += [f"{r[k]:.4f}" if k != "frechet" else f"{r[k]:.4g}" for k in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["prompt_distances", "run"]
