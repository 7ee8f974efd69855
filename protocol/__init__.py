"""The contract between ktapctl and ktapd: bytecode, output records, messages, framing.

Pure and synchronous: no I/O, and no import of trio, ctypes, lark, ktapd or
ktapctl (tests/test_imports.py enforces it).
"""
