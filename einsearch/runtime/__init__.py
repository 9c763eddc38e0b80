"""What a generated module carries besides its class, pasted in verbatim by ``codegen``.

* ``sizes``: the checks and arithmetic of the structure's sizes (``whole``, ``divide``).
* ``tiling``: the pair rule of a level on absolute token positions, and the partition
  of a sequence's causal pairs into batched attention calls. Standard library only:
  the analyzer and the planner import it, so the numbers they print and the module's
  computation come from one place.
* ``attention``: the torch kernels that run such a partition (forward, backward,
  decoding).

Nothing here may import from the rest of einsearch: a generated file must stand alone.
"""
