"""The package version: one place, on the lowest floor, so every module can name it."""

__version__ = "0.1.0"
