"""Audits of a finished run (a side branch of the pipeline): attacks that try to break the certificates.

* :mod:`~bench.audit.pgd`: l2 attacks (minimum-norm search, PGD with restarts and targets, smoothed PGD);
* :mod:`~bench.audit.soundness`: what each check guarantees (0.999 r audit, paper criterion, smoothed check);
* :mod:`~bench.audit.robustness`: the attack stage of a run, writing every robustness and soundness file.
"""
