"""Every limit of the bytecode format and of a running session, in one place.

Format limits bound what a Program may contain; the compiler reports them
as compile errors, the decoder and verifier reject programs that exceed
them.  Runtime limits are a session's defaults; the daemon may let a
session raise some of them up to the ceilings here.

This module must not import anything outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTECODE_VERSION = 1

# --- format limits (compile time, decode time, verify time) ---------------
MAX_PROGRAM_BYTES = 16 * 1024 * 1024  # encoded size accepted by decode()
MAX_FUNCTIONS = 4096
MAX_REGISTERS = 250  # per function
MAX_PARAMS = 64
MAX_UPVALUES = 250  # per function
MAX_CONSTANTS = 65536  # per function
MAX_CODE = 65536  # instructions per function
MAX_CONSTANT_STRING = 65536  # characters in one string constant
MAX_CALL_ARGS = 64  # arguments in one call
MAX_PROBES = 1024  # probe table entries
MAX_EVENTS_PER_PROBE = 64  # event specs in one `trace a, b, c`
MAX_SPEC_LENGTH = 4096  # characters in an event spec or filter
# Loops become Python loops, and CPython refuses more than 20 statically
# nested loop/try blocks; keep a margin for the VM's own.
MAX_LOOP_DEPTH = 16
# Every block becomes an indented Python block; CPython's tokenizer stops
# at 100 indentation levels.
MAX_BLOCK_DEPTH = 64
MAX_SOURCE_NAME = 4096

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class RuntimeLimits:
    """What one session may use; the `run` message may ask for other values
    up to the ceilings below."""

    string_bytes: int = 511  # longest string a script can make
    table_entries: int = 100_000  # default entries per table
    table_entries_max: int = 1_000_000  # ceiling for table.new()
    call_depth: int = 200  # non-tail recursion ("stack overflow")
    handler_steps: int = 100_000  # per probe/timer handler invocation
    main_steps: int = 10_000_000  # main chunk and trace_end
    output_line_bytes: int = 12_288  # one printf result (ktap: 3 pages)


STRING_BYTES_CEILING = 64 * 1024
TABLE_ENTRIES_CEILING = 10_000_000
