"""The stage registry: the built-in stage, in-process and entry-point registration, errors that
name the plugin, the ``stages``/``plugins`` commands, and docs/hosts.md's host snippet and
third-party stage package (built, pip-installed and trained through ``reward-plugin train``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import doc_files, importable, pip_install_doc_package, read_hh_rows, write_jsonl

from dataset_formats.plugins import ALLOWLIST_ENV
from reward_plugin import plugins
from reward_plugin.cli import main
from reward_plugin.errors import PluginError, UnknownStageError
from reward_plugin.stages import Stage, get_stage, list_stages, register_stage, reset, unregister_stage_plugin
from reward_plugin.stages.reward import RewardStage

DOC = Path(__file__).resolve().parents[1] / "docs" / "hosts.md"


def test_builtin_reward_stage_is_registered_through_the_hook():
    (info,) = [i for i in list_stages() if i.name == "reward"]
    assert (info.plugin, info.distribution) == ("reward_plugin.stages.reward", "built-in")
    assert isinstance(get_stage("reward"), RewardStage)
    with pytest.raises(UnknownStageError, match=r"unknown stage 'nope'; available stages: .*reward"):
        get_stage("nope")


class _Echo(Stage):
    name = "echo"
    description = "test stage"

    def validate_config(self, section):
        return dict(section)

    def build_datasets(self, cfg, tokenizer):
        return {"train": None, "eval": None}

    def build_model(self, cfg, tokenizer=None):
        return None

    def build_trainer(self, cfg, model, tokenizer, datasets):
        return None

    def export(self, trainer, cfg):
        return Path(".")


def test_in_process_registration_and_errors_naming_the_plugin():
    name = register_stage(_Echo)
    try:
        assert name == "in-process:echo" and isinstance(get_stage("echo"), _Echo)
        with pytest.raises(
            PluginError,
            match=r"plugin 'twin': stage 'echo' is already registered by plugin 'in-process:echo'",
        ):
            register_stage(_Echo(), plugin_name="twin")
        assert plugins.pm.get_plugin("twin") is None  # the failed registration was undone
    finally:
        unregister_stage_plugin(name)
    assert "echo" not in [i.name for i in list_stages()]

    class NotAStage:
        name = "x"

    with pytest.raises(
        PluginError, match=r"plugin 'in-process:x': registered .* not a reward_plugin.stages.Stage"
    ):
        register_stage(NotAStage())  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="has no name"):
        register_stage(type("Nameless", (_Echo,), {"name": ""}))
    assert [i.name for i in list_stages()] == ["pointwise", "reward"]  # the built-in stages


def test_stages_and_plugins_commands(capsys):
    assert main(["stages", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["pointwise", "reward"]
    assert all(r["distribution"] == "built-in" for r in rows)
    assert main(["stages"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "origin", "description"]
    assert [line.split()[:2] for line in lines[1:]] == [["pointwise", "built-in"], ["reward", "built-in"]]
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["reward_plugin.stages.reward"]["provides"] == ["reward"]
    assert by_name["reward_plugin.stages.reward"]["registry"] == "reward_plugin"
    assert by_name["reward_plugin.pointwise.stage"]["provides"] == ["pointwise"]
    assert by_name["dataset_formats.adapters.hh_rlhf"]["provides"] == ["hh-rlhf"]
    assert all(r["distribution"] == "reward-plugin" and r["version"] for r in rows)


# -------------------------------------------------------------------- docs/hosts.md


def test_host_snippet_runs_the_reward_stage(tmp_path, tiny_llama_dir):
    text = DOC.read_text(encoding="utf-8")
    snippet = re.search(r"<!-- host-snippet -->\n```python\n(.*?)\n```", text, re.DOTALL).group(1)
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 11
    namespace: dict = {}
    exec(compile(snippet, str(DOC), "exec"), namespace)  # noqa: S102 - our own documented code, as written
    data = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(12))
    section = {
        "model": tiny_llama_dir,
        "train_data": {"path": str(data), "format": "hh-rlhf"},
        "output_dir": str(tmp_path / "out"),
        "max_length": 96,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
    }
    out = Path(namespace["run_reward_stage"](section))
    assert (out / "model.safetensors").is_file()
    stats = json.loads((out / "reward_stats.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert (config["reward_mean"], config["reward_std"]) == (stats["mean"], stats["std"]) and stats[
        "num_pairs"
    ] > 0


@pytest.fixture(scope="module")
def regression_stage(tmp_path_factory):
    """The documented third-party stage package, pip-installed and loaded through its entry point."""
    assert set(doc_files(DOC)) == {"pyproject.toml", "reward_plugin_regression.py"}
    target = pip_install_doc_package(DOC, tmp_path_factory.mktemp("regression"))
    (entry_points,) = target.glob("reward_plugin_regression-0.1.0.dist-info/entry_points.txt")
    assert "[reward_plugin]" in entry_points.read_text()
    with importable(target, "reward_plugin_regression"):
        yield target


@pytest.fixture()
def loaded_regression(regression_stage, monkeypatch):
    monkeypatch.setenv(ALLOWLIST_ENV, "score_regression")
    plugins.load_plugins()
    plugins.load_entry_points(plugins.pm, plugins.GROUP)
    reset()
    yield
    plugins.pm.unregister(name="score_regression")
    reset()


def test_entry_point_stage_is_not_loaded_without_the_allowlist(regression_stage, monkeypatch):
    monkeypatch.delenv(ALLOWLIST_ENV, raising=False)
    plugins.load_entry_points(plugins.pm, plugins.GROUP)
    reset()
    assert [i.name for i in list_stages()] == ["pointwise", "reward"]  # the built-in stages


def test_third_party_stage_is_listed_and_trains_through_the_runner(
    loaded_regression, tmp_path, tiny_llama_dir, capsys
):
    assert main(["stages", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["score-regression"]["plugin"] == "score_regression"
    assert rows["score-regression"]["distribution"] == "reward-plugin-regression"
    assert main(["plugins"]) == 0
    assert re.search(
        r"score_regression\s+reward_plugin\s+reward-plugin-regression 0\.1\.0\s+score-regression",
        capsys.readouterr().out,
    )

    # texts scored by a simple learnable target: 1 when they mention "sorry", else -1
    texts = [row["chosen"][-300:] for row in read_hh_rows(24)]
    rows = [{"text": t, "score": 1.0 if "sorry" in t.lower() else -1.0} for t in texts]
    data = write_jsonl(tmp_path / "scores.jsonl", rows)
    config = tmp_path / "regression.yaml"
    out = tmp_path / "out"
    config.write_text(
        f"stage: score-regression\nmodel: {tiny_llama_dir}\ndata: {data}\noutput_dir: {out}\n"
        "max_length: 64\nlearning_rate: 3.0e-3\nbatch_size: 8\n",
        encoding="utf-8",
    )

    def mse(folder: str) -> float:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        with torch.no_grad():
            preds = [
                model(**tok(r["text"], truncation=True, max_length=64, return_tensors="pt"))
                .logits[0, 0]
                .item()
                for r in rows
            ]
        return float(np.mean((np.array(preds) - np.array([r["score"] for r in rows])) ** 2))

    assert main(["train", str(config), "--max_steps", "15"]) == 0
    assert "saved the score-regression model to" in capsys.readouterr().out
    assert mse(str(out)) < 0.8 * mse(tiny_llama_dir)
    assert main(["train", str(config), "--learning_rte", "1"]) == 1
    assert "unknown key 'learning_rte' in the score-regression config" in capsys.readouterr().err


def test_exported_model_loads_in_trl_with_the_same_rewards(tmp_path, tiny_llama_dir):
    """TRL's RewardTrainer takes the exported folder as its model and predicts the same rewards."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import RewardConfig as TRLConfig
    from trl import RewardTrainer as TRLTrainer

    data = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(8))
    section = {
        "model": tiny_llama_dir,
        "train_data": {"path": str(data), "format": "hh-rlhf"},
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "max_length": 96,
    }
    stage = get_stage("reward")
    result = stage.run(stage.validate_config(section))
    table = result.trainer.train_dataset
    ours = result.trainer.predict(table).predictions  # (n, 2): chosen, rejected
    rows = Dataset.from_dict(
        {"chosen_ids": table["input_ids_chosen"], "rejected_ids": table["input_ids_rejected"]}
    )
    trl_args = TRLConfig(
        output_dir=str(tmp_path / "trl"), bf16=False, report_to="none", max_length=None, use_cpu=True
    )
    trainer = TRLTrainer(model=str(result.output_dir), args=trl_args, train_dataset=rows)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        logits = trainer.model.eval()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    chosen, rejected = logits.squeeze(-1).double().chunk(2)
    np.testing.assert_allclose(np.stack([chosen.numpy(), rejected.numpy()], 1), ours, atol=1e-5)
