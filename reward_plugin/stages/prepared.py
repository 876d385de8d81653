"""Prepared data of a run: converted once, kept on disk, memory-mapped by every process.

A run with several processes (``accelerate launch``, ``torchrun``) loads its data inside
``TrainingArguments.main_process_first``: the main process converts a raw source into an Arrow
file under ``<output_dir>/_prepared_data/``, the others wait, find the finished file and open it.
Every process memory-maps the same file (``datasets.Dataset.from_file``), so the pairs are neither
converted nor held in Python memory once per process. The file name carries a fingerprint of the
inputs (paths, sizes, modification times), the conversion settings and the tokenizer, so a later
run with the same inputs (``--resume``) reuses it and any change converts again. The folder
starts with ``_``, which ``push_to_hub`` leaves out; delete it freely.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import DataError

logger = logging.getLogger(__name__)

#: Sub-folder of ``output_dir`` holding the prepared data.
PREPARED_DIR = "_prepared_data"


def _file_entries(path: Path) -> list[list[Any]]:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the data path (train_data / eval_data)")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _tokenizer_identity(tokenizer: Any) -> str:
    """A hash of what decides the token ids: the fast tokenizer's JSON, special tokens, template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(tokenizer).encode())
    for attr in ("name_or_path", "special_tokens_map", "chat_template", "padding_side", "truncation_side"):
        h.update(repr(getattr(tokenizer, attr, None)).encode())
    return h.hexdigest()


def fingerprint(paths: list[str], settings: dict[str, Any], tokenizer: Any) -> str:
    """A short hash of the source files, the conversion settings and the tokenizer.

    Args:
        paths: the source files or folders (their size and modification time count, not their bytes).
        settings: the conversion settings (format, options, lengths, template, error mode).
        tokenizer: the tokenizer the pairs are made with.

    Returns:
        16 hex digits.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("reward-plugin")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without an install
        package = "unknown"
    template = settings.get("chat_template")
    if isinstance(template, str) and Path(template).is_file():
        settings = {**settings, "chat_template_file": _file_entries(Path(template))}
    data = {
        "package": package,
        "sources": [_file_entries(Path(p)) for p in paths],
        "settings": settings,
        "tokenizer": _tokenizer_identity(tokenizer),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def prepared_pairs(
    paths: list[str], settings: dict[str, Any], tokenizer: Any, *, folder: Path, name: str
) -> Any:
    """The pairs of a raw source, converted unless an earlier process or run already did.

    Args:
        paths: the raw source files.
        settings: keyword arguments of :func:`dataset_formats.convert` (``format``,
            ``format_options``, ``max_length``, ``truncation``, ``chat_template``, ``on_error``,
            ``num_proc``).
        tokenizer: the run's tokenizer.
        folder: where prepared files live (``<output_dir>/_prepared_data``).
        name: ``"train"`` or ``"eval"`` (file names and messages).

    Returns:
        A memory-mapped ``datasets.Dataset`` of the pairs.

    Raises:
        dataset_formats.DatasetFormatError: a file cannot be read or converted.
    """
    import datasets

    key = fingerprint(paths, {k: v for k, v in settings.items() if k != "num_proc"}, tokenizer)
    target = folder / f"{name}-{key}.arrow"
    summary = folder / f"{name}-{key}.stats.json"
    if target.is_file():
        dataset = datasets.Dataset.from_file(str(target))
        logger.info(
            "%s data: %d pairs prepared earlier from %s, memory-mapped from %s (not converted again)",
            name,
            len(dataset),
            ", ".join(paths),
            target,
        )
        return dataset
    from dataset_formats.conversion import convert

    folder.mkdir(parents=True, exist_ok=True)
    # The stats file is written before the Arrow file is moved into place; the Arrow file, renamed
    # atomically, is what marks a finished conversion.
    stats = convert(paths, target, tokenizer=tokenizer, overwrite=True, stats_json=summary, **settings)
    logger.info("%s data converted from %s:\n%s", name, ", ".join(paths), stats.summary())
    dataset = datasets.Dataset.from_file(str(target))
    logger.info("%s data: %d pairs, memory-mapped from %s", name, len(dataset), target)
    return dataset


def prepared_table(path: Path, *, folder: Path, name: str) -> Any:
    """A tokenized Parquet file as a memory-mapped dataset (copied once into an Arrow file).

    Args:
        path: a Parquet file with tokenized pairs.
        folder: where prepared files live.
        name: ``"train"`` or ``"eval"`` (file names and messages).

    Returns:
        A memory-mapped ``datasets.Dataset`` with the file's columns.
    """
    import datasets
    import pyarrow as pa

    from dataset_formats.tables import open_table

    target = folder / f"{name}-{fingerprint([str(path)], {'copy': 'parquet'}, None)}.arrow"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            source = open_table(path, "parquet")
            with pa.ipc.new_stream(str(tmp), source.schema) as sink:
                for batch in source.iter_batches():  # one row group in memory at a time
                    sink.write_batch(batch)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    dataset = datasets.Dataset.from_file(str(target))
    logger.info("%s data: %d pairs from %s, memory-mapped from %s", name, len(dataset), path, target)
    return dataset
