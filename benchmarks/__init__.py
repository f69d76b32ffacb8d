"""The benchmark suite: servable against the floor and its peers, in one run.

Entry point: ``python -m benchmarks run [--quick] [--out benchmarks/RESULTS.md]`` (see
``benchmarks/README.md``). The orchestrator (``suite``) never imports TensorFlow; models,
floors, servers and load clients all run as child processes stopped by their PIDs.
"""
