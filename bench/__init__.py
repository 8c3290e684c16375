"""The FaRS vs Cohen benchmark harness.

The library follows the pipeline, one subpackage a stage:

    data -> models -> certify -> report        (audit and perf are side branches)

* :mod:`bench.common.env`: shared settings (folders, device choice, fp32 policy, CPU allocator); imports nothing
  from ``bench``;
* :mod:`bench.data`: datasets behind a registry, the embedded evaluation subset, image selection;
* :mod:`bench.models`: networks, checkpoints, the zoo of one experiment, training;
* :mod:`bench.certify`: method runs, the per-example certify loop, results file, manifest, sharding;
* :mod:`bench.report`: metrics, tables and plots of a results file;
* :mod:`bench.audit`: attacks and soundness audits; :mod:`bench.perf`: timing sweeps and the cost model.

The top-level modules ``run``, ``attack``, ``scaling``, ``art_compare`` and ``train`` are the commands
(``python -m bench.run`` ...): leaves that nothing imports.
"""
