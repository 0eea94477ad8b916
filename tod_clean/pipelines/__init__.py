"""The commands' orchestration, one module per command, used alike by the command line (``tod_clean.cli``)
and the Python API (``tod_clean.api``): each takes data as a path or in memory, refuses every bad option
and output before any work (naming options as its caller spells them), calls the core, and writes the
outputs. ``inputs`` and ``outputs`` hold what several of them share.
"""
