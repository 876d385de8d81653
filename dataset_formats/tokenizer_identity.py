"""Which tokenizer made a table: stored with the conversion settings, compared before training.

Token ids mean nothing without the vocabulary that produced them: a table converted with one
tokenizer and trained on a model with another trains on the wrong text, without an error. The
identity written into a table's metadata (:func:`tokenizer_identity`) is the tokenizer's name or
path, its vocabulary size, the ids of its special tokens and a SHA-256 of its vocabulary (every
token string with its id, added tokens included); :func:`identity_mismatch` says whether another
tokenizer would read the same ids as the same text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Special tokens whose ids a table's sequences contain (the padding token is the trainer's choice).
COMPARED_SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "unk_token_id")
#: Key of the identity in a table's conversion metadata.
IDENTITY_KEY = "tokenizer_identity"


def vocabulary_hash(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's vocabulary: every ``(token, id)``, added tokens included, sorted by id."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def tokenizer_identity(tokenizer: Any, name: str | None = None) -> dict[str, Any]:
    """The identity of ``tokenizer``: ``name``, ``vocab_size``, ``special_token_ids``, ``vocab_sha256``.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        name: how the user named it (folder or hub name); default its ``name_or_path``.
    """
    special = {key: getattr(tokenizer, key, None) for key in (*COMPARED_SPECIAL_TOKENS, "pad_token_id")}
    return {
        "name": name or str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        "vocab_size": len(tokenizer),
        "special_token_ids": special,
        "vocab_sha256": vocabulary_hash(tokenizer),
    }


def describe(identity: dict[str, Any]) -> str:
    """``'name' (vocabulary 32000, sha256 1a2b3c4d)``."""
    return (
        f"{identity['name']!r} (vocabulary {identity['vocab_size']}, sha256 {identity['vocab_sha256'][:8]})"
    )


def identity_mismatch(stored: dict[str, Any], tokenizer: Any, name: str | None = None) -> str | None:
    """What differs between a table's stored identity and ``tokenizer``, or None when they agree.

    The names may differ (a copy of a tokenizer in another folder is the same tokenizer); the
    vocabulary and the ids of the special tokens a sequence contains may not. The padding token is
    not compared: the trainer pads, and may set one.

    Returns:
        A phrase such as ``"the vocabulary differs"``, or None.
    """
    current = tokenizer_identity(tokenizer, name)
    if stored.get("vocab_sha256") != current["vocab_sha256"]:
        if stored.get("vocab_size") != current["vocab_size"]:
            return f"the vocabulary differs ({stored.get('vocab_size')} vs {current['vocab_size']} tokens)"
        return "the vocabulary differs (same size, other tokens or ids)"
    stored_special = stored.get("special_token_ids") or {}
    for key in COMPARED_SPECIAL_TOKENS:
        if stored_special.get(key) != current["special_token_ids"][key]:
            return f"{key} differs ({stored_special.get(key)} vs {current['special_token_ids'][key]})"
    return None


def stored_identity(path: Any) -> dict[str, Any] | None:
    """The tokenizer identity in a converted table's metadata (``.parquet``, ``.arrow`` or a
    ``datasets`` folder), or None when the table has none (converted before identities were stored,
    or written by another tool)."""
    from .errors import InputFileError
    from .tables import read_schema, table_kind
    from .writing import METADATA_KEY

    if table_kind(path) is None:
        return None
    try:
        schema = read_schema(path)
    except InputFileError:
        return None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if not raw:
        return None
    identity = json.loads(raw).get(IDENTITY_KEY)
    return identity if isinstance(identity, dict) else None
