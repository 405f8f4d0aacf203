"""The RL row schema (verl 0.9.1 RL parquet, as ``RLHFDataset``, our agent loops and the reward read it): one
``pyarrow`` schema shared by every builder of RL rows."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["EXTRA_INFO_TYPE", "ROW_SCHEMA"]

EXTRA_INFO_TYPE = pa.struct(
    [
        ("index", pa.int64()),
        ("split", pa.string()),
        ("source_id", pa.string()),
        ("task", pa.string()),
        ("task_family", pa.string()),
        ("persona_setting", pa.string()),
        ("persona_id", pa.string()),
        ("persona", pa.string()),
        ("question", pa.string()),
        ("choices", pa.list_(pa.string())),
    ]
)

ROW_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", EXTRA_INFO_TYPE),
        ("agent_name", pa.string()),
    ]
)
