"""Make the shared test assembler (tests/vm/ktap_asm.py) importable here."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "vm"))
