"""The pipeline core: stage declarations, config, graph, cache, lock and the dask runner.

See docs/pipeline.md for how to write a stage and what the cache key and resume guarantee.
"""
