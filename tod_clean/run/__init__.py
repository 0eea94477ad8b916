"""A run directory: its files and config (``rundir``), and a finished run opened for inference (``loaded``)."""
