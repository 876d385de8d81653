"""The paired Arrow schema that conversion writes and the trainer reads."""

from __future__ import annotations

import pyarrow as pa

#: The four paired columns every output table has.
PAIR_COLUMNS = ("input_ids_chosen", "attention_mask_chosen", "input_ids_rejected", "attention_mask_rejected")
MARGIN_COLUMN = "margin"
SOURCE_ROW_COLUMN = "source_row"
#: Optional boolean column: true where the pair is a tie (written only by ``convert --ties tie``).
TIE_COLUMN = "tie"


def pair_schema(with_margin: bool, id_type: pa.DataType | None = None, with_tie: bool = False) -> pa.Schema:
    """The output schema: four ``list<int32>`` columns (ids and masks), optional ``margin`` float32,
    optional ``tie`` bool, ``source_row`` int64.

    ``id_type`` replaces ``int32`` for the ids and masks when given.
    """
    id_type = pa.int32() if id_type is None else id_type
    fields = [pa.field(name, pa.list_(id_type), nullable=False) for name in PAIR_COLUMNS]
    if with_margin:
        fields.append(pa.field(MARGIN_COLUMN, pa.float32(), nullable=False))
    if with_tie:
        fields.append(pa.field(TIE_COLUMN, pa.bool_(), nullable=False))
    fields.append(pa.field(SOURCE_ROW_COLUMN, pa.int64(), nullable=False))
    return pa.schema(fields)
