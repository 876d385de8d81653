"""The third-party plugin example of docs/plugins.md, built and pip-installed, then loaded
through its ``dataset_formats`` entry point and used to convert rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import doc_files, importable, pip_install_doc_package

from dataset_formats import detect_format, get_format, list_formats, plugins, registry
from dataset_formats.rendering import render_pair

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install the documented package (offline, no deps) into a private target folder."""
    assert set(doc_files(DOC)) == {"pyproject.toml", "reward_plugin_qa_votes.py"}
    target = pip_install_doc_package(DOC, tmp_path_factory.mktemp("qa_votes"))
    assert list(target.glob("reward_plugin_qa_votes-0.1.0.dist-info/entry_points.txt"))
    with importable(target, "reward_plugin_qa_votes"):
        yield target


@pytest.fixture()
def loaded_example(installed_example, monkeypatch):
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "qa_votes")
    plugins.load_plugins()
    plugins.load_entry_points(plugins.pm, plugins.GROUP)
    registry.reset()
    yield
    plugins.pm.unregister(name="qa_votes")
    registry.reset()


def test_entry_points_are_not_loaded_in_tests_without_the_allowlist(installed_example, monkeypatch):
    monkeypatch.delenv(plugins.ALLOWLIST_ENV, raising=False)
    plugins.load_entry_points(plugins.pm, plugins.GROUP)
    assert plugins.pm.get_plugin("qa_votes") is None
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "someone_else")
    plugins.load_entry_points(plugins.pm, plugins.GROUP)
    assert plugins.pm.get_plugin("qa_votes") is None


def test_installed_plugin_is_listed_detected_and_converts(loaded_example):
    info = {i.name: i for i in list_formats()}["qa-votes"]
    assert (info.plugin, info.distribution) == ("qa_votes", "reward-plugin-qa-votes")
    assert info.description.startswith("question/better/worse rows")
    row = {
        "question": "Best sorting algorithm for nearly sorted data?",
        "better": "Insertion sort.",
        "worse": "Bogosort.",
        "votes": 7,
    }
    assert detect_format(list(row), [row]) == "qa-votes"
    adapter = get_format("qa-votes")
    (pair,) = adapter.to_pairs(row, adapter.make_options({"scale": "0.5"}))
    assert pair.margin == pytest.approx(0.5 * math.log(8))
    text = render_pair(pair, None)
    assert (
        text.chosen
        == "\n\nHuman: Best sorting algorithm for nearly sorted data?\n\nAssistant: Insertion sort."
    )
    with pytest.raises(Exception) as info:
        adapter.to_pairs({**row, "votes": -1}, adapter.make_options({}))
    assert getattr(info.value, "reason", None) == "wrong_type"


def test_installed_plugin_appears_in_the_formats_command(loaded_example, capsys):
    from dataset_formats.cli import main

    assert main(["formats"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("qa-votes"))
    assert "reward-plugin-qa-votes" in line
