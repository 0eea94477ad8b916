"""Where and how the work runs: the device, the processes of a launch, the share of rows each one takes,
and the progress it reports. Nothing here knows about data files, models or runs (it imports only
``tod_clean.errors``), so every other part of tod-clean may use it.

- ``device``: ``pick_device`` (``--device``) and ``autocast_dtype`` (``--precision``).
- ``processes``: ``Processes``, this process's place among those of ``accelerate launch``: which rows it
  takes, how results are gathered, which process writes.
- ``shard``: ``Shard``, block K of N of the training rows (``score --shard K/N``, and process K of N), and
  what a part of the scores records about its shard.
- ``progress``: ``Progress``, the interface the core reports progress to (the CLI renders it), and
  ``NullProgress`` / ``NamedProgress``.
"""
