"""Small training experiments with generated attention modules (``einsearch experiment ...``)."""
