"""RewardTrainer end to end: training, metrics, rewards at the last real token, saving, data layouts."""

from __future__ import annotations

import copy
import json
import math

import datasets
import numpy as np
import pytest
import torch
from conftest import read_hh_rows, tiny_llama_config, tokenized_pairs
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward_plugin import ConfigError, DataError, RewardConfig, RewardDataCollatorWithPadding, RewardTrainer
from reward_plugin.metrics import reward_metrics
from reward_plugin.sampler import LengthGroupedPairSampler


def config(tmp_path, **overrides) -> RewardConfig:
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
    }
    kwargs.update(overrides)
    return RewardConfig(**kwargs)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_all_changed(before: dict[str, torch.Tensor], model) -> None:
    after = dict(model.named_parameters())
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name].detach())]
    assert not unchanged, f"parameters that did not train: {unchanged}"


def reference_rewards(model, dataset) -> list[tuple[float, float]]:
    """Each sequence scored alone, without padding: the model's score at its last token."""
    model = model.eval()
    out = []
    with torch.no_grad():
        for row in dataset:
            pair = []
            for side in ("chosen", "rejected"):
                ids = torch.tensor([row[f"input_ids_{side}"]])
                pair.append(model(input_ids=ids).logits[0, 0].item())
            out.append(tuple(pair))
    return out


TRAIN_KEYS = {
    "loss",
    "accuracy",
    "margin",
    "rewards/chosen_mean",
    "rewards/chosen_std",
    "rewards/rejected_mean",
    "rewards/rejected_std",
}


def test_tiny_llama_trains_end_to_end(tmp_path, tiny_llama, bpe_tokenizer):
    train = tokenized_pairs(bpe_tokenizer, n=16, max_length=40)
    evaluation = tokenized_pairs(bpe_tokenizer, n=8, max_length=40, offset=16)
    before = snapshot(tiny_llama)
    trainer = RewardTrainer(
        model=tiny_llama,
        # precision: the bf16 "auto" default
        args=config(tmp_path, eval_strategy="steps", eval_steps=2, save_final_model=False),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=bpe_tokenizer,
    )
    trainer.train()
    assert_all_changed(before, trainer.model)

    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    eval_logs = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(train_logs) == 4 and len(eval_logs) == 2
    for entry in train_logs:
        assert TRAIN_KEYS <= set(entry)
        # Each log covers one step of 4 pairs: the accuracy is a count of them, inside its interval.
        assert entry["num_pairs"] == 4 and (entry["accuracy"] * 4).is_integer()
        assert entry["accuracy_ci_low"] <= entry["accuracy"] <= entry["accuracy_ci_high"]
        assert entry["rewards/chosen_std"] >= 0
    for entry in eval_logs:
        assert {f"eval_{k}" for k in TRAIN_KEYS} <= set(entry)

    # After train(): statistics in the config and next to the model, and a model card.
    assert not (tmp_path / "out" / "model.safetensors").exists()  # save_final_model=False
    stats = json.loads((tmp_path / "out" / "reward_stats.json").read_text())
    assert stats["split"] == "eval" and stats["num_pairs"] == 8
    assert (
        trainer.model.config.reward_mean == stats["mean"] and trainer.model.config.reward_std == stats["std"]
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "## Reward statistics" in card
    assert "eval_accuracy" in card


def test_saved_model_reloads_with_stats_and_same_rewards(tmp_path, tiny_llama, bpe_tokenizer):
    train = tokenized_pairs(bpe_tokenizer, n=8, max_length=32)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, max_steps=2, bf16=False),
        train_dataset=train,
        processing_class=bpe_tokenizer,
    )
    trainer.train()  # saves the final model (save_final_model=True by default)
    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "reward_stats.json", "README.md", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.num_labels == 1
    assert reloaded.config.reward_mean == pytest.approx(trainer.reward_stats["mean"])
    assert trainer.reward_stats["split"] == "train" and trainer.reward_stats["num_pairs"] == 8
    predicted = trainer.predict(train).predictions
    assert predicted.shape == (8, 2)
    np.testing.assert_allclose(predicted, reference_rewards(reloaded, train), atol=1e-5, rtol=0)


def test_minilm_trains_end_to_end(tmp_path, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    train = tokenized_pairs(tokenizer, n=8, max_length=32)
    # The head's bias cancels in r_chosen - r_rejected, so only the centring term gives it a gradient.
    trainer = RewardTrainer(
        model=minilm_path,
        args=config(tmp_path, max_steps=2, learning_rate=1e-4, center_rewards_coefficient=0.01),
        train_dataset=train,
        eval_dataset=train,
    )
    assert trainer.processing_class.name_or_path == minilm_path  # tokenizer loaded from the model folder
    assert type(trainer.model).__name__ == "BertForSequenceClassification"
    before = snapshot(trainer.model)
    trainer.train()
    assert_all_changed(before, trainer.model)
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(train_logs) == 2 and all(TRAIN_KEYS <= set(e) for e in train_logs)
    stats = json.loads((tmp_path / "out" / "reward_stats.json").read_text())
    assert stats == trainer.reward_stats and (stats["source"], stats["num_pairs"]) == ("evaluation", 8)
    assert (
        trainer.model.config.reward_mean == stats["mean"] and trainer.model.config.reward_std == stats["std"]
    )
    assert all(m.p == 0.0 for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout))


def test_predict_and_eval_metrics_match_unpadded_reference(tmp_path, tiny_llama, bpe_tokenizer):
    data = tokenized_pairs(bpe_tokenizer, n=10, max_length=40, margin=True)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, bf16=False, per_device_eval_batch_size=5),  # 2 equal batches: loss = pair mean
        train_dataset=data,
        processing_class=bpe_tokenizer,
    )
    reference = reference_rewards(copy.deepcopy(trainer.model), data)
    output = trainer.predict(data)
    assert output.predictions.shape == (10, 2)
    np.testing.assert_allclose(output.predictions, reference, atol=1e-5, rtol=0)
    assert output.label_ids.tolist() == pytest.approx(list(data["margin"]))  # label_ids carry the margins
    chosen, rejected = [r[0] for r in reference], [r[1] for r in reference]
    expected = reward_metrics(chosen, rejected)
    for key, value in expected.items():
        assert output.metrics[f"test_{key}"] == pytest.approx(value, abs=1e-5)
    loss = sum(math.log1p(math.exp(-(c - r - m))) for c, r, m in zip(chosen, rejected, data["margin"])) / 10
    assert output.metrics["test_loss"] == pytest.approx(loss, abs=1e-5)


def test_first_step_loss_uses_the_margin(tmp_path, tiny_llama, bpe_tokenizer):
    data = tokenized_pairs(bpe_tokenizer, n=8, max_length=32, margin=True)
    reference = reference_rewards(copy.deepcopy(tiny_llama), data.select(range(4)))
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(
            tmp_path,
            max_steps=1,
            bf16=False,
            train_sampling_strategy="sequential",
            center_rewards_coefficient=0.1,
            save_reward_stats=False,
        ),
        train_dataset=data,
        processing_class=bpe_tokenizer,
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    margins = list(data["margin"])[:4]
    expected = sum(math.log1p(math.exp(-(c - r - m))) for (c, r), m in zip(reference, margins)) / 4
    expected += 0.1 * sum((c + r) ** 2 for c, r in reference) / 4
    assert logged["loss"] == pytest.approx(expected, abs=1e-5)
    assert logged["accuracy"] == sum(c > r for c, r in reference) / 4


def eos_terminated_pairs(tokenizer, n=6):
    """Pairs whose sequences end with EOS, of different lengths (so padding is needed)."""
    rows = read_hh_rows(n)
    eos = tokenizer.eos_token_id
    enc = lambda text, k: tokenizer(text[-k:])["input_ids"] + [eos]
    data = {
        "input_ids_chosen": [],
        "attention_mask_chosen": [],
        "input_ids_rejected": [],
        "attention_mask_rejected": [],
    }
    for i, row in enumerate(rows):
        for side, k in (("chosen", 60 + 15 * i), ("rejected", 40 + 9 * i)):
            ids = enc(row[side], k)
            data[f"input_ids_{side}"].append(ids)
            data[f"attention_mask_{side}"].append([1] * len(ids))
    return datasets.Dataset.from_dict(data)


def hidden_state_reward(model, ids: list[int]) -> float:
    """Independent reward: run the decoder alone on the unpadded sequence, score its last hidden state."""
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        return model.score(hidden[0, -1]).item()


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_reward_is_read_at_the_last_real_token_when_pad_is_eos(tmp_path, bpe_tokenizer, padding_side):
    tokenizer = copy.deepcopy(bpe_tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.eos_token_id)
    )
    data = eos_terminated_pairs(tokenizer)
    trainer = RewardTrainer(
        model=model, args=config(tmp_path, bf16=False), train_dataset=data, processing_class=tokenizer
    )
    assert trainer.model.config.pad_token_id == tokenizer.eos_token_id
    batch = RewardDataCollatorWithPadding(pad_token_id=tokenizer.pad_token_id, padding_side=padding_side)(
        list(data)
    )
    trainer.model.eval()
    with torch.no_grad():
        chosen, rejected = trainer.compute_rewards(trainer.model, batch)
    expected_chosen = [hidden_state_reward(trainer.model, row["input_ids_chosen"]) for row in data]
    expected_rejected = [hidden_state_reward(trainer.model, row["input_ids_rejected"]) for row in data]
    assert chosen.tolist() == pytest.approx(expected_chosen, abs=1e-5)
    assert rejected.tolist() == pytest.approx(expected_rejected, abs=1e-5)
    # The model's own pooling (rightmost token that is not the pad id) skips the real EOS: a different number.
    with torch.no_grad():
        pooled = trainer.model(
            input_ids=batch["input_ids_chosen"], attention_mask=batch["attention_mask_chosen"]
        )
    assert max(abs(a - b) for a, b in zip(pooled.logits[:, 0].tolist(), expected_chosen)) > 1e-3


def test_missing_pad_token_becomes_eos_in_tokenizer_and_model(tmp_path, bpe_tokenizer):
    tokenizer = copy.deepcopy(bpe_tokenizer)
    tokenizer.pad_token = None
    model = AutoModelForSequenceClassification.from_config(
        tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=None)
    )
    data = tokenized_pairs(bpe_tokenizer, n=4, max_length=16)
    trainer = RewardTrainer(
        model=model, args=config(tmp_path), train_dataset=data, processing_class=tokenizer
    )
    assert tokenizer.pad_token == "</s>"
    assert trainer.model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    assert trainer.data_collator.pad_token_id == tokenizer.eos_token_id


def test_tokenizer_without_pad_or_eos_gets_a_new_pad_token(tmp_path, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)  # WordPiece: no EOS, and no "<pad>" in the vocab
    data = tokenized_pairs(tokenizer, n=4, max_length=16)
    tokenizer.pad_token = None
    assert tokenizer.eos_token is None and "<pad>" not in tokenizer.get_vocab()
    size = len(tokenizer)
    model = AutoModelForSequenceClassification.from_config(
        tiny_llama_config(vocab_size=size, pad_token_id=None)
    )
    trainer = RewardTrainer(
        model=model, args=config(tmp_path, max_steps=1), train_dataset=data, processing_class=tokenizer
    )
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == size
    assert trainer.model.config.pad_token_id == size
    assert trainer.model.get_input_embeddings().weight.shape[0] == size + 1
    trainer.train()


def test_model_name_or_path_is_loaded_as_a_one_label_classifier(tmp_path, bpe_tokenizer):
    from transformers import LlamaForCausalLM

    causal_dir = tmp_path / "causal"
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(bpe_tokenizer))).save_pretrained(causal_dir)
    bpe_tokenizer.save_pretrained(causal_dir)
    data = tokenized_pairs(bpe_tokenizer, n=4, max_length=16)
    trainer = RewardTrainer(model=str(causal_dir), args=config(tmp_path, max_steps=1), train_dataset=data)
    assert type(trainer.model).__name__ == "LlamaForSequenceClassification"
    assert trainer.model.config.num_labels == 1 and trainer.model.dtype == torch.float32
    assert trainer.processing_class.pad_token_id == trainer.model.config.pad_token_id == 0
    trainer.train()


def test_model_with_several_labels_is_refused(tmp_path, bpe_tokenizer):
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(num_labels=2))
    with pytest.raises(ConfigError, match=r"num_labels=2.*num_labels=1"):
        RewardTrainer(model=model, args=config(tmp_path), train_dataset=tokenized_pairs(bpe_tokenizer, n=2))


def test_missing_columns_name_the_columns_present(tmp_path, tiny_llama, bpe_tokenizer):
    bad = datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    with pytest.raises(DataError) as info:
        RewardTrainer(
            model=tiny_llama, args=config(tmp_path), train_dataset=bad, processing_class=bpe_tokenizer
        )
    message = str(info.value)
    assert message.startswith(
        "the train dataset has no tokenized preference pairs: it needs the columns "
        "input_ids_chosen, attention_mask_chosen, input_ids_rejected, attention_mask_rejected"
    )
    assert "columns present: answer, question" in message


def test_trl_id_columns_train_like_the_four_columns(tmp_path, bpe_tokenizer):
    four = tokenized_pairs(bpe_tokenizer, n=8, max_length=24)
    trl_style = four.rename_columns({"input_ids_chosen": "chosen_ids", "input_ids_rejected": "rejected_ids"})
    trl_style = trl_style.remove_columns(["attention_mask_chosen", "attention_mask_rejected"])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(vocab_size=len(bpe_tokenizer)))
    runs = []
    for i, data in enumerate((four, trl_style)):
        trainer = RewardTrainer(
            model=copy.deepcopy(model),
            args=config(tmp_path / str(i), max_steps=2, bf16=False, save_reward_stats=False),
            train_dataset=data,
            processing_class=bpe_tokenizer,
        )
        if i == 1:
            assert set(trainer.train_dataset.column_names) == set(four.column_names)
            assert list(trainer.train_dataset["attention_mask_chosen"]) == list(four["attention_mask_chosen"])
        trainer.train()
        runs.append([e["loss"] for e in trainer.state.log_history if "loss" in e])
    assert runs[0] == runs[1]


def test_eval_dataset_dict_and_compute_metrics_override(tmp_path, tiny_llama, bpe_tokenizer):
    seen = {}

    def my_metrics(eval_pred):
        seen["shape"] = eval_pred.predictions.shape
        seen["labels"] = eval_pred.label_ids.tolist()
        return {"chosen_wins": float((eval_pred.predictions[:, 0] > eval_pred.predictions[:, 1]).sum())}

    a = tokenized_pairs(bpe_tokenizer, n=4, max_length=16)
    b = tokenized_pairs(bpe_tokenizer, n=6, max_length=16, offset=4, margin=True)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path),
        train_dataset=a,
        eval_dataset={"short": a, "margin": b},
        processing_class=bpe_tokenizer,
        compute_metrics=my_metrics,
    )
    metrics = trainer.evaluate()
    assert {
        "eval_short_loss",
        "eval_short_chosen_wins",
        "eval_margin_loss",
        "eval_margin_chosen_wins",
    } <= set(metrics)
    assert seen["shape"] == (6, 2) and seen["labels"] == pytest.approx(list(b["margin"]))


def test_text_level_data_is_tokenized_through_the_toolkit(tmp_path, tiny_llama, bpe_tokenizer):
    rows = read_hh_rows(6)
    text = datasets.Dataset.from_dict(
        {
            "prompt": ["Human: " + r["chosen"][-120:-60] for r in rows],
            "chosen": [r["chosen"][-60:] for r in rows],
            "rejected": [r["rejected"][-60:] for r in rows],
        }
    )
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, max_steps=1),
        train_dataset=text,
        processing_class=bpe_tokenizer,
    )
    prepared = trainer.train_dataset
    assert {
        "input_ids_chosen",
        "attention_mask_chosen",
        "input_ids_rejected",
        "attention_mask_rejected",
    } <= set(prepared.column_names)
    assert len(prepared) == 6
    trainer.train()


def test_group_by_length_uses_the_pair_sampler(tmp_path, tiny_llama, bpe_tokenizer):
    data = tokenized_pairs(bpe_tokenizer, n=12, max_length=48)
    for options in ({"group_by_length": True}, {"train_sampling_strategy": "group_by_length"}):
        trainer = RewardTrainer(
            model=copy.deepcopy(tiny_llama),
            args=config(tmp_path, max_steps=2, **options),
            train_dataset=data,
            eval_dataset=data,
            processing_class=bpe_tokenizer,
        )
        sampler = trainer._get_train_sampler()
        assert isinstance(sampler, LengthGroupedPairSampler)
        assert sorted(sampler) == list(range(12))
        trainer.train()


def test_model_init_and_tokenizer_alias(tmp_path, bpe_tokenizer):
    def model_init():
        return AutoModelForSequenceClassification.from_config(
            tiny_llama_config(vocab_size=len(bpe_tokenizer), pad_token_id=None)
        )

    data = tokenized_pairs(bpe_tokenizer, n=4, max_length=16)
    trainer = RewardTrainer(
        model_init=model_init, args=config(tmp_path, max_steps=1), train_dataset=data, tokenizer=bpe_tokenizer
    )
    assert trainer.processing_class is bpe_tokenizer
    trainer.train()
    assert trainer.model.config.pad_token_id == bpe_tokenizer.pad_token_id  # set on the model_init model too


def test_argument_errors(tmp_path, tiny_llama, bpe_tokenizer):
    data = tokenized_pairs(bpe_tokenizer, n=2, max_length=8)
    with pytest.raises(ConfigError, match="pass `model`"):
        RewardTrainer(args=config(tmp_path), train_dataset=data)
    with pytest.raises(ConfigError, match="pass the tokenizer once"):
        RewardTrainer(
            model=tiny_llama,
            args=config(tmp_path),
            train_dataset=data,
            processing_class=bpe_tokenizer,
            tokenizer=copy.deepcopy(bpe_tokenizer),
        )
    with pytest.raises(ConfigError, match="must be a reward_plugin.RewardConfig"):
        from transformers import TrainingArguments

        RewardTrainer(model=tiny_llama, args=TrainingArguments(output_dir=str(tmp_path)), train_dataset=data)


def test_trl_style_batches_and_unknown_batches(tmp_path, tiny_llama, bpe_tokenizer):
    data = tokenized_pairs(bpe_tokenizer, n=4, max_length=16)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, bf16=False, pair_batching="standard"),
        train_dataset=data,
        processing_class=bpe_tokenizer,
    )
    ours = trainer.data_collator(list(data))
    trl_layout = {
        "input_ids": torch.cat([ours["input_ids_chosen"], ours["input_ids_rejected"]]),
        "attention_mask": torch.cat([ours["attention_mask_chosen"], ours["attention_mask_rejected"]]),
    }
    with torch.no_grad():
        a = trainer.compute_rewards(trainer.model, ours)
        b = trainer.compute_rewards(trainer.model, trl_layout)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(
        DataError, match=r"the batch has no input_ids_chosen, .*; it holds labels, pixel_values"
    ):
        trainer.compute_rewards(trainer.model, {"pixel_values": torch.zeros(1), "labels": torch.zeros(1)})


def test_bad_text_rows_are_skipped_with_a_warning_or_raised(tmp_path, tiny_llama, bpe_tokenizer, caplog):
    def row(question, good, bad):
        return {
            "chosen": f"\n\nHuman: {question}\n\nAssistant:{good}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant:{bad}",
        }

    rows = [
        row("What is 2+2?", " 4.", " 5."),
        row("Capital of France?", " Paris.", " Rome."),
        # a chosen transcript without an answer: the hh-rlhf adapter rejects the row
        {"chosen": "\n\nHuman: Say hi", "rejected": "\n\nHuman: Say hi\n\nAssistant: Hi!"},
        row("Spell cat", " c-a-t.", " k-a-t."),
    ]
    text = datasets.Dataset.from_list(rows)
    with caplog.at_level("WARNING", logger="reward_plugin.data"):
        trainer = RewardTrainer(
            model=tiny_llama,
            args=config(tmp_path, dataset_format="hh-rlhf", dataset_on_error="skip"),
            train_dataset=text,
            processing_class=bpe_tokenizer,
        )
    assert len(trainer.train_dataset) == 3
    assert "train dataset: skipped 1 of 4 'hh-rlhf' rows" in caplog.text
    with pytest.raises(
        DataError,
        match=r"train dataset, row 2 \(0-based\), field 'chosen'.*reading the train dataset as 'hh-rlhf'",
    ):
        RewardTrainer(
            model=tiny_llama,
            args=config(tmp_path, dataset_format="hh-rlhf"),  # raise is the default
            train_dataset=text,
            processing_class=bpe_tokenizer,
        )


def count_evaluation_loops(trainer) -> list[str]:
    """Record the metric prefix of every evaluation loop (one forward pass over a dataset) the trainer runs."""
    calls: list[str] = []
    inner = trainer.evaluation_loop

    def counting(*args, **kwargs):
        calls.append(kwargs.get("metric_key_prefix", args[-1] if len(args) >= 5 else "eval"))
        return inner(*args, **kwargs)

    trainer.evaluation_loop = counting
    return calls


def test_reward_stats_reuse_the_final_evaluation(tmp_path, tiny_llama, bpe_tokenizer):
    train = tokenized_pairs(bpe_tokenizer, n=8, max_length=32)
    evaluation = tokenized_pairs(bpe_tokenizer, n=6, max_length=32, offset=8)
    args = config(
        tmp_path, max_steps=2, bf16=False, eval_strategy="steps", eval_steps=2, save_final_model=False
    )
    trainer = RewardTrainer(
        model=tiny_llama,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=bpe_tokenizer,
    )
    loops = count_evaluation_loops(trainer)
    trainer.train()
    assert len(loops) == 1  # the evaluation at the last step; the statistics reuse its rewards
    # Independent check: the rewards of the trained model, scored one sequence at a time.
    expected = np.array(reference_rewards(trainer.model, evaluation))
    stats = trainer.reward_stats
    assert stats["split"] == "eval" and stats["num_pairs"] == 6
    assert stats["mean"] == pytest.approx(expected.mean(), abs=1e-5)
    assert stats["std"] == pytest.approx(expected.std(), abs=1e-5)
    # What a host asks for after training is that same evaluation, without another pass...
    final = trainer.final_evaluation()
    assert len(loops) == 1 and final["eval_accuracy"] == trainer.state.log_history[-2]["eval_accuracy"]
    # ...until the weights change.
    with torch.no_grad():
        next(trainer.model.parameters()).add_(0.5)
    trainer.final_evaluation()
    assert len(loops) == 2


def test_reward_stats_without_scheduled_evaluation_evaluate_once(tmp_path, tiny_llama, bpe_tokenizer):
    train = tokenized_pairs(bpe_tokenizer, n=8, max_length=32)
    evaluation = tokenized_pairs(bpe_tokenizer, n=6, max_length=32, offset=8)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, max_steps=2, bf16=False, save_final_model=False),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=bpe_tokenizer,
    )
    loops = count_evaluation_loops(trainer)
    trainer.train()
    trainer.final_evaluation()
    assert loops == ["eval"]  # one logged evaluation serves the statistics and the final metrics
    logged = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    assert len(logged) == 1 and logged[0]["eval_num_pairs"] == 6
    low, high = logged[0]["eval_accuracy_ci_low"], logged[0]["eval_accuracy_ci_high"]
    assert low <= logged[0]["eval_accuracy"] <= high


def test_reward_stats_without_eval_set_come_from_the_training_forwards(tmp_path, tiny_llama, bpe_tokenizer):
    train = tokenized_pairs(bpe_tokenizer, n=8, max_length=32)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, max_steps=1, per_device_train_batch_size=8, bf16=False, save_final_model=False),
        train_dataset=train,
        processing_class=bpe_tokenizer,
    )
    # The one step scores all 8 pairs with the initial weights (dropout off): scored alone, independently.
    expected = np.array(reference_rewards(copy.deepcopy(trainer.model), train))
    loops = count_evaluation_loops(trainer)
    trainer.train()
    assert loops == []  # no pass after training
    stats = trainer.reward_stats
    assert (stats["split"], stats["source"], stats["num_pairs"], stats["steps"]) == (
        "train",
        "training_forwards",
        8,
        [1, 1],
    )
    assert stats["mean"] == pytest.approx(expected.mean(), abs=1e-5)
    assert stats["std"] == pytest.approx(expected.std(), abs=1e-5)
    assert json.loads((tmp_path / "out" / "reward_stats.json").read_text()) == stats


def test_reward_stats_keep_only_the_last_pairs_seen(tmp_path, tiny_llama, bpe_tokenizer, monkeypatch):
    import reward_plugin.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "TRAIN_STATS_PAIRS", 5)
    train = tokenized_pairs(bpe_tokenizer, n=8, max_length=32)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, max_steps=3, bf16=False, save_final_model=False),  # 3 steps of 4 pairs
        train_dataset=train,
        processing_class=bpe_tokenizer,
    )
    trainer.train()
    stats = trainer.reward_stats
    assert (stats["source"], stats["num_pairs"], stats["steps"]) == ("training_forwards", 5, [2, 3])


def test_reward_stats_pass_scores_a_bounded_train_sample_when_asked(
    tmp_path, tiny_llama, bpe_tokenizer, monkeypatch
):
    import reward_plugin.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "TRAIN_STATS_PAIRS", 5)
    train = tokenized_pairs(bpe_tokenizer, n=8, max_length=32)
    trainer = RewardTrainer(
        model=tiny_llama,
        args=config(tmp_path, max_steps=1, bf16=False, save_final_model=False, reward_stats_pass=True),
        train_dataset=train,
        processing_class=bpe_tokenizer,
    )
    loops = count_evaluation_loops(trainer)
    trainer.train()
    assert loops == ["reward_stats"]
    stats = trainer.reward_stats
    assert (stats["split"], stats["source"], stats["num_pairs"]) == ("train", "pass", 5)
    # The final weights' rewards of the same 5 pairs, scored one sequence at a time.
    sample = train.shuffle(seed=trainer.args.seed).select(range(5))
    expected = np.array(reference_rewards(trainer.model, sample))
    assert stats["mean"] == pytest.approx(expected.mean(), abs=1e-5)
    assert stats["std"] == pytest.approx(expected.std(), abs=1e-5)
