"""The contracts every stage speaks: the tick and its topic codec, control messages, output rows.

One home per concept, so a new field or signal is one edit here plus the kernel that
makes it (and a migration for its column); the sink's columns, the desk feed's frames
and the checks on the ClickHouse DDL are all derived from these definitions.
"""

from tickstream.contracts.control import (
    ControlMessage,
    EndOfInput,
    Heartbeat,
    decode_control,
    encode_end_of_input,
    encode_heartbeat,
    is_end_of_input,
    is_heartbeat,
)
from tickstream.contracts.dead_letter import DEAD_LETTER_COLUMNS, DeadLetter
from tickstream.contracts.rows import (
    ROW_SPECS,
    ROW_TYPES,
    Bar,
    DivergenceWindow,
    OutputRow,
    RecordBreak,
    RollingBreak,
    RollingHigh,
    RowSpec,
    SignalEvent,
    row_from_doc,
    signal_id,
    spec_for_kind,
)
from tickstream.contracts.ticks import (
    TICK_COLUMNS,
    TICK_FIELDS,
    BadTick,
    DecodedTicks,
    TickRow,
    decode_ticks_message,
    encode_tick_rows,
    encode_ticks,
    tick_identity,
)

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "DeadLetter",
    "ROW_SPECS",
    "ROW_TYPES",
    "TICK_COLUMNS",
    "TICK_FIELDS",
    "BadTick",
    "Bar",
    "ControlMessage",
    "DecodedTicks",
    "DivergenceWindow",
    "EndOfInput",
    "Heartbeat",
    "OutputRow",
    "RecordBreak",
    "RollingHigh",
    "RollingBreak",
    "RowSpec",
    "SignalEvent",
    "TickRow",
    "decode_control",
    "decode_ticks_message",
    "encode_end_of_input",
    "encode_heartbeat",
    "encode_tick_rows",
    "encode_ticks",
    "is_end_of_input",
    "is_heartbeat",
    "row_from_doc",
    "signal_id",
    "spec_for_kind",
    "tick_identity",
]
