"""Two CPU processes (gloo): group statistics over the gathered batch equal those of one process."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drift.training import distributed
from drift.method.advantages import drift_advantages
from tests.test_trainer import DRIFT_ON, make_config, make_trainer

KEYS = ("reward_mean", "reward_std", "kept_fraction", "diversity", "vendi")


def _batch(total):
    g = torch.Generator().manual_seed(1)
    return torch.randn(total, generator=g), torch.randn(total, 5, generator=g), torch.randn(total, 3, 5, generator=g)


def _worker(rank, world, init_file, source, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # the pure group statistics over a batch gathered from the two shards
        cfg = make_config(source, drift=DRIFT_ON)
        total = cfg.sampling.prompts_per_iteration * cfg.sampling.group_size
        mine = distributed.shard(total)
        gathered = [distributed.gather_samples(x[mine], total) for x in _batch(total)]
        adv, kept = drift_advantages(*gathered, cfg, num_steps=4)
        # a real trainer step on sharded rollouts
        trainer = make_trainer(source, drift=DRIFT_ON)
        metrics = trainer.step()
        weights = {k: v.clone() for k, v in trainer.model.denoiser.state_dict().items()}
        torch.save({"adv": adv, "kept": kept, "metrics": metrics, "weights": weights, "shard": mine},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_group_statistics_match_across_two_processes(tiny_sd15_dir, tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tiny_sd15_dir), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert sorted(torch.cat([r["shard"] for r in ranks]).tolist()) == list(range(8))

    adv, kept = drift_advantages(*_batch(8), make_config(tiny_sd15_dir, drift=DRIFT_ON), num_steps=4)
    for r in ranks:
        torch.testing.assert_close(r["adv"], adv, rtol=0, atol=0)
        assert torch.equal(r["kept"], kept)

    single = make_trainer(tiny_sd15_dir, drift=DRIFT_ON).step()
    for key in KEYS:
        for r in ranks:
            assert r["metrics"][key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    for name, w in ranks[0]["weights"].items():
        assert torch.equal(w, ranks[1]["weights"][name]), name
