"""Reading, checking and writing the data tod-clean works on."""
