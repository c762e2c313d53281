"""``ensemble-driver demo`` (``command``), the i-PI inputs it prepares (``inputs``), and
running i-PI with drivers under a watch (``launch``), which the examples, the benchmarks
and the tests use too."""
