"""Certification of an experiment: the method runs, the per-example loop, its results file and manifest.

* :mod:`~bench.certify.batch_size`: the throughput-best batch of the sampled methods (results do not depend on it);
* :mod:`~bench.certify.runs`: one certify method on one model at one sigma (:func:`build_runs`);
* :mod:`~bench.certify.runner`: certify every pending (run, image) pair, one timed call per image;
* :mod:`~bench.certify.results_file`: the ``certify.tsv`` format, resume and merge;
* :mod:`~bench.certify.manifest`: ``manifest.json`` and the resume check (content-identified config);
* :mod:`~bench.certify.distributed`: sharding over ``torchrun`` ranks.
"""
