"""How separable are chosen and rejected in the frozen MiniLM-L6 features? A linear-probe ceiling.

Converts the shared hh-rlhf rows with the MiniLM tokenizer (max_length 256, left truncation, as
in ``benchmarks/quality_minilm.yaml``), embeds every response once with the frozen encoder (the
``[CLS]`` pooler output that ``BertForSequenceClassification`` reads, and the mean of the token
states that sentence-transformers uses), and fits a Bradley-Terry linear reward
``w . (f(chosen) - f(rejected))`` on 698 pairs, scoring the 100 held-out pairs, over several
random splits. It shows how much accuracy one epoch of fine-tuning can be expected to reach on
this data::

    python benchmarks/quality_probe.py --splits 5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def embed(model, sequences: list[list[int]], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(pooler outputs, mean token states)`` of unpadded id lists, batched with right padding."""
    pooled, mean = [], []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            lengths = torch.tensor([len(s) for s in batch])
            width = int(lengths.max())
            ids = torch.tensor([s + [0] * (width - len(s)) for s in batch])
            mask = (torch.arange(width)[None] < lengths[:, None]).long()
            out = model(input_ids=ids, attention_mask=mask)
            pooled.append(out.pooler_output)
            states = out.last_hidden_state * mask[..., None]
            mean.append(states.sum(1) / mask.sum(1, keepdim=True))
    return torch.cat(pooled).numpy(), torch.cat(mean).numpy()


def probe_accuracy(diff: np.ndarray, train: np.ndarray, held_out: np.ndarray, l2: float = 1e-3) -> float:
    """Fit ``-logsigmoid(diff @ w)`` (+ L2) on ``train`` rows with L-BFGS; accuracy on ``held_out``."""
    x = torch.tensor(diff, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = -torch.nn.functional.logsigmoid(x[train] @ w).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(((x[held_out] @ w) > 0).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=5, help="random 698/100 splits (default 5)")
    parser.add_argument("--eval-size", type=int, default=100)
    args = parser.parse_args()

    from quality_minilm import minilm_pairs  # the same conversion (benchmarks/ is on sys.path)
    from transformers import AutoModel

    model_path, pairs = minilm_pairs()
    table = pairs.to_dict()
    model = AutoModel.from_pretrained(model_path).eval()
    chosen = embed(model, table["input_ids_chosen"])
    rejected = embed(model, table["input_ids_rejected"])
    n = len(table["input_ids_chosen"])
    rng = np.random.default_rng(0)
    splits = [rng.permutation(n) for _ in range(args.splits)]
    print(
        f"{n} pairs, {args.splits} random splits of {n - args.eval_size} train / {args.eval_size} held out\n"
    )
    print("| features | held-out accuracy per split | mean |")
    print("|---|---|---|")
    for name, index in (("[CLS] pooler (what the classifier reads)", 0), ("mean of token states", 1)):
        diff = chosen[index] - rejected[index]
        accs = [probe_accuracy(diff, s[args.eval_size :], s[: args.eval_size]) for s in splits]
        print(f"| {name} | {', '.join(f'{a:.2f}' for a in accs)} | {np.mean(accs):.3f} |")


if __name__ == "__main__":
    main()
