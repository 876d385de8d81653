"""One packed training run, sharded with FSDP2 over ``torchrun`` processes (gloo, CPU); used by test_fsdp_packed.py.

Every step takes a global batch of pairs; each process trains on its contiguous share in the packed
layout (``pair_attention`` from the command line), FSDP2 averages the gradients, and the global loss
(the mean of the processes' losses: equal shares) and the final full weights are saved by rank 0.
With one process the model is not sharded: the reference run.

    torchrun --standalone --nproc_per_node 2 tests/fsdp_packed_worker.py OUT.pt --attention varlen
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.distributed as dist
from transformers import AutoModelForSequenceClassification, LlamaConfig

from reward_plugin.loss import pairwise_loss
from reward_plugin.pairs import PrefixSharedPairCollator, packed_rewards
from reward_plugin.scoring import ScoreReader

GLOBAL_BATCH, STEPS, VOCAB = 8, 4, 64


def batches() -> list[list[dict]]:
    g = torch.Generator().manual_seed(7)

    def ids(k: int) -> list[int]:
        return torch.randint(3, VOCAB, (k,), generator=g).tolist()

    out = []
    for _ in range(STEPS):
        pairs = []
        for _ in range(GLOBAL_BATCH):
            prompt = ids(int(torch.randint(0, 12, (1,), generator=g)))
            pairs.append(
                {
                    "chosen_ids": prompt + ids(int(torch.randint(1, 8, (1,), generator=g))),
                    "rejected_ids": prompt + ids(int(torch.randint(1, 8, (1,), generator=g))),
                }
            )
        out.append(pairs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--attention", default="varlen")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, num_labels=1, pad_token_id=0,
    )  # fmt: skip
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa").train()
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    collator = PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=math.inf)
    reader = ScoreReader(model)
    share = GLOBAL_BATCH // world
    losses = []
    for pairs in batches():
        batch = collator(pairs[rank * share : (rank + 1) * share])
        loss = pairwise_loss(*packed_rewards(reader, model, batch, attention=args.attention))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(float(total) / world)
    state = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in model.state_dict().items()
    }
    if rank == 0:
        torch.save({"losses": losses, "state": state}, args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
