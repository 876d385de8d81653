"""Dataset catalogs: a name in a catalog file resolved to data files, a format and its options.

LLaMA-Factory's ``dataset_info.json`` is the built-in catalog (:mod:`.adapters.llamafactory`);
a plugin reads its own catalogs by implementing the ``resolve_dataset`` hook (:mod:`.hookspecs`).
Every place that takes a catalog (``convert --dataset-info``, ``train_data: {dataset_info: ...,
dataset: ...}``) resolves it here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import plugins
from .errors import OptionError, PluginError


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset named in a catalog.

    Attributes:
        paths: its data files.
        format: the format adapter that reads them (``reward-plugin formats``).
        options: that adapter's options (as ``--option KEY=VALUE``); options given by the user
            are applied on top.
    """

    paths: tuple[str, ...]
    format: str
    options: dict[str, Any] = field(default_factory=dict)


def resolve_dataset(catalog: str | os.PathLike, name: str) -> ResolvedDataset:
    """The dataset ``name`` of ``catalog``, as the first plugin that reads the catalog resolves it.

    Raises:
        InputFileError, OptionError: the catalog cannot be read or has no such dataset (the
            resolver's own error, naming the file and the dataset).
        PluginError: a resolver answered with something other than a :class:`ResolvedDataset`.
    """
    arguments = {"catalog": os.fspath(catalog), "name": str(name)}
    hook = plugins.load_plugins().hook.resolve_dataset
    # pluggy's firstresult order (tryfirst ... trylast), called here one by one so that a bad
    # answer names the plugin that gave it.
    for impl in reversed(hook.get_hookimpls()):
        result = impl.function(**{key: arguments[key] for key in impl.argnames})
        if result is None:
            continue
        if not isinstance(result, ResolvedDataset) or not result.paths or not result.format:
            raise PluginError(
                impl.plugin_name,
                f"resolve_dataset returned {result!r} for {arguments['catalog']!r}; return a "
                "ResolvedDataset with paths and a format, or None",
            )
        return result
    raise OptionError(f"{arguments['catalog']}: no plugin reads this catalog; is it a dataset_info.json?")
