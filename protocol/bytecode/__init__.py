"""The bytecode container: opcode table, builtin table, Program, encode/decode, disassembler."""

from protocol.bytecode.encoding import DecodeError, decode, encode
from protocol.bytecode.program import Function, Probe, Program, Upvalue

__all__ = ["DecodeError", "Function", "Probe", "Program", "Upvalue", "decode", "encode"]
