"""dataset_formats: turn raw preference data into paired, tokenized Arrow tables.

Public API::

    import dataset_formats as df
    df.list_formats()                       # registered adapters
    df.get_format("hh-rlhf")                # one adapter
    df.convert("data.jsonl.gz", "out.parquet", format="hh-rlhf", tokenizer="path/to/tok")
    df.register_format(MyAdapter)           # in-process registration (notebooks)
    df.resolve_dataset("data/dataset_info.json", "dpo_en_demo")  # a catalog entry: files, format, options
"""

from .adapter import FormatAdapter, NoOptions
from .catalogs import ResolvedDataset, resolve_dataset
from .errors import (
    DatasetFormatError,
    DuplicateFormatError,
    InputFileError,
    OptionError,
    OutputExistsError,
    PluginError,
    RecordError,
    TemplateError,
    UnknownFormatError,
    UnsafeTemplateError,
)
from .hookspecs import hookimpl
from .records import Message, PreferencePair
from .registry import (
    FormatInfo,
    detect_format,
    get_format,
    list_formats,
    register_format,
    unregister_format_plugin,
)
from .schema import PAIR_COLUMNS, pair_schema

__all__ = [
    "PAIR_COLUMNS",
    "DatasetFormatError",
    "DuplicateFormatError",
    "FormatAdapter",
    "FormatInfo",
    "InputFileError",
    "Message",
    "NoOptions",
    "OptionError",
    "OutputExistsError",
    "PluginError",
    "PreferencePair",
    "RecordError",
    "ResolvedDataset",
    "TemplateError",
    "UnknownFormatError",
    "UnsafeTemplateError",
    "convert",
    "detect_format",
    "get_format",
    "hookimpl",
    "list_formats",
    "pair_schema",
    "register_format",
    "resolve_dataset",
    "unregister_format_plugin",
]


_LAZY = ("convert", "encode_rows", "ConvertStats")


def __getattr__(name: str):
    # The conversion pipeline imports tokenizers/transformers; load it only when used.
    if name in _LAZY:
        from . import conversion

        for lazy in _LAZY:
            globals()[lazy] = getattr(conversion, lazy)
        return globals()[name]
    raise AttributeError(f"module 'dataset_formats' has no attribute {name!r}")
