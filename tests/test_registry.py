"""The format registry: built-ins, in-process registration, duplicates, failing plugins, detection."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pluggy
import pytest

import dataset_formats as df
from dataset_formats import hookspecs, plugins, registry
from dataset_formats.adapters.detect import DETECTION_ORDER

BUILT_INS = {
    "hh-rlhf",
    "preference",
    "chat",
    "llamafactory",
    "axolotl-bt",
    "llama2-labels",
    "score-pair",
    "shp",
    "helpsteer2",
    "ranking",
    "rm-bench",
    "rewardbench",
    "rewardbench2",
}
FORMAT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"


class Upper(df.FormatAdapter):
    name = "upper-test"
    description = "prompt/chosen/rejected, upper-cased"
    required_fields = ("prompt", "chosen", "rejected")

    def to_pairs(self, row, options):
        return [df.PreferencePair(row["prompt"].upper(), row["chosen"].upper(), row["rejected"].upper())]


def test_built_in_formats_are_listed_with_their_modules():
    infos = df.list_formats()
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    by_name = {i.name: i for i in infos}
    assert BUILT_INS <= set(by_name)
    assert set(DETECTION_ORDER) == BUILT_INS
    for name in BUILT_INS:
        info = by_name[name]
        assert info.distribution == "built-in" and info.plugin in plugins.DEFAULT_PLUGINS
        assert info.description and "\n" not in info.description
        assert info.adapter.name == name and df.get_format(name) is info.adapter


def test_built_in_hookimpls_are_trylast():
    for module in plugins.DEFAULT_PLUGINS:
        impls = [
            i for i in plugins.load_plugins().hook.register_formats.get_hookimpls() if i.plugin_name == module
        ]
        impls += [i for i in plugins.pm.hook.detect_format.get_hookimpls() if i.plugin_name == module]
        impls += [i for i in plugins.pm.hook.resolve_dataset.get_hookimpls() if i.plugin_name == module]
        assert impls and all(i.trylast for i in impls), module


def test_unknown_format_lists_the_names():
    with pytest.raises(df.UnknownFormatError) as info:
        df.get_format("hh_rlhf")
    assert str(info.value).startswith(
        "unknown dataset format 'hh_rlhf'; available formats: axolotl-bt, chat,"
    )
    assert isinstance(info.value, LookupError)


def test_register_format_in_process_and_unregister():
    plugin = df.register_format(Upper)
    try:
        assert plugin == "in-process:upper-test"
        info = {i.name: i for i in df.list_formats()}["upper-test"]
        assert (info.plugin, info.distribution) == (plugin, "in-process")
        adapter = df.get_format("upper-test")
        (pair,) = adapter.to_pairs({"prompt": "q ", "chosen": "a", "rejected": "b"}, adapter.make_options({}))
        assert (pair.prompt, pair.chosen, pair.rejected) == ("Q ", "A", "B")
    finally:
        df.unregister_format_plugin(plugin)
    assert "upper-test" not in {i.name for i in df.list_formats()}


def test_duplicate_name_names_both_plugins_and_registers_nothing():
    class FakeHH(Upper):
        name = "hh-rlhf"

    with pytest.raises(df.DuplicateFormatError) as info:
        df.register_format(FakeHH, plugin_name="my-plugin")
    message = str(info.value)
    assert (
        message
        == "plugin 'my-plugin': format 'hh-rlhf' is already registered by 'dataset_formats.adapters.hh_rlhf'"
    )
    assert plugins.pm.get_plugin("my-plugin") is None
    assert type(df.get_format("hh-rlhf")).__name__ == "HHRLHFAdapter"


def test_plugin_registering_garbage_or_raising_is_named():
    class Garbage:
        @staticmethod
        @hookspecs.hookimpl
        def register_formats(register):
            register(object())

    class Raising:
        @staticmethod
        @hookspecs.hookimpl
        def register_formats(register):
            raise KeyError("boom")

    for plugin, expected in (
        (Garbage, "which is not a FormatAdapter"),
        (Raising, "register_formats failed: KeyError"),
    ):
        plugins.pm.register(plugin, name="bad-plugin")
        registry.reset()
        try:
            with pytest.raises(df.PluginError, match=rf"^plugin 'bad-plugin': .*{expected}"):
                df.list_formats()
        finally:
            plugins.pm.unregister(name="bad-plugin")
            registry.reset()
    assert df.list_formats()


def _fake_distribution(root: Path, dist: str, entry_points: str) -> None:
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "broken-formats", "[dataset_formats]\nbroken = broken_formats_module_xyz\n")
    (tmp_path / "broken_formats_module_xyz.py").write_text("raise RuntimeError('missing dependency foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "broken")
    manager = pluggy.PluginManager(plugins.GROUP)
    manager.add_hookspecs(hookspecs)
    try:
        with pytest.raises(df.PluginError) as info:
            plugins.load_entry_points(manager, plugins.GROUP)
    finally:
        sys.modules.pop("broken_formats_module_xyz", None)
    message = str(info.value)
    assert message.startswith(
        "plugin 'broken (broken-formats)': failed to import entry point 'broken_formats_module_xyz'"
    )
    assert "RuntimeError: missing dependency foo" in message and plugins.ALLOWLIST_ENV in message
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "")  # an empty allowlist loads nothing
    plugins.load_entry_points(manager, plugins.GROUP)


DETECT_CASES = [
    pytest.param(path.stem, case["row"], id=f"{path.stem}: {case['id']}")
    for path in sorted(FORMAT_FIXTURES.glob("*.json"))
    for case in json.loads(path.read_text(encoding="utf-8"))["cases"]
    if "pairs" in case and case.get("detect", True)
]


@pytest.mark.parametrize(("name", "row"), DETECT_CASES)
def test_detect_format_picks_the_fixture_format(name, row):
    assert df.detect_format(list(row), [row]) == name


def test_detect_format_on_real_files_and_unknown_columns():
    from conftest import LLAMAFACTORY_DEMO, read_hh_rows

    rows = read_hh_rows(10)
    assert df.detect_format(list(rows[0]), rows) == "hh-rlhf"
    if LLAMAFACTORY_DEMO.exists():
        demo = json.loads(LLAMAFACTORY_DEMO.read_text(encoding="utf-8"))[:10]
        assert df.detect_format(list(demo[0]), demo) == "llamafactory"
    assert df.detect_format(["text", "label"], [{"text": "x", "label": 1}]) is None


def test_a_plugin_detector_is_asked_before_the_built_ins():
    class Detector:
        @staticmethod
        @hookspecs.hookimpl
        def detect_format(columns, sample):
            return "upper-test" if "prompt" in columns else None

    plugin = df.register_format(Upper)
    plugins.pm.register(Detector, name="detector")
    try:
        row = {"prompt": "q", "chosen": "a", "rejected": "b"}
        assert df.detect_format(list(row), [row]) == "upper-test"
        assert df.detect_format(["chosen", "rejected"], [{"chosen": "a", "rejected": "b"}]) == "preference"
    finally:
        plugins.pm.unregister(name="detector")
        df.unregister_format_plugin(plugin)
