"""einsearch: structured attention scoring functions as einsums: describe, plan, search, generate."""
