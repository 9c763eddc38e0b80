"""Small training experiments with generated attention modules (``einsearch experiment ...``).

They sit on top of the core package and nothing in it imports them. The modules:

* ``settings``: each experiment's settings, checked, with the memory a run needs (no torch, so
  the command line answers a bad argument before it loads torch);
* ``outputs``: output paths checked before the work and written at the end;
* ``corpus``: the language-modelling corpus, Python standard-library source (no torch);
* ``training``: what both experiments share: the pre-LN block, muP parameter groups, the
  learning-rate schedule, the training loop, the deterministic context, the attention class built
  from a structure, FLOP counting;
* ``icr``: in-context linear regression (``einsearch experiment icr``);
* ``lm``: character-level language modelling (``einsearch experiment lm``);
* ``pool``: a sweep's runs in worker processes (the sweeps in ``bench/``).

Results render in ``einsearch.report`` and plot in ``einsearch.plot``.
"""
