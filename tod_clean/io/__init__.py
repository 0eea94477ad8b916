"""Reading, checking and writing the data tod-clean works on.

A table keeps the exact bytes of every record (for the line-based formats and JSON arrays), so a filtered
file reproduces each kept row byte for byte. Rows are parsed from where they are stored when asked for, a
chunk at a time: a file larger than memory is read, validated and filtered with memory that does not grow
with its rows beyond a few int64 arrays of N. JSON arrays and standard input are read into memory. All
writes go to a temporary file that is renamed into place only when complete.

- ``inputs``: ``read_table`` (any input, through the readers in ``formats/``) and ``to_table`` (also
  DataFrames and Datasets).
- ``formats/``: one reader per input format, and their registry.
- ``table``: ``Table``, the rows of one input, and ``ColumnView``.
- ``rows``: where the rows live (bytes in memory or re-read from a file) and the sequences that read them.
- ``columns``: checks of text, label and id columns and of header names.
- ``paths``: atomic outputs, output targets, refusals of outputs that clash with inputs or each other.
- ``writers``: subsets of a table in its own format or as a dataset folder; atomic bytes and arrays.
- ``frames``: score tables (DataFrames) as files or as tod-clean's dataset folders.
"""

STDIN = "-"  # the path that names standard input (and standard output, among outputs)
