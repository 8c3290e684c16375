"""Performance (a side branch of the pipeline): timing sweeps, the cost model, batch sizes, peer comparisons.

* :mod:`~bench.perf.n_sweep`: seconds per image versus n;
* :mod:`~bench.perf.cost_model`: flops, bytes, the machine's floor and measured / floor;
* :mod:`~bench.perf.size_sweep`: speedup versus model size (one module per job);
* :mod:`~bench.perf.peers`: our Cohen RS against IBM ART's;
* :mod:`~bench.perf.cohen_overhead`: ``bench.run``'s Cohen RS against plain batched forwards, per sample.
"""
