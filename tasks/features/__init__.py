"""Features: full-pass analyzers, the transforms Beam applies, and their Keras twins.

- :mod:`tasks.features.transforms`: mergeable analyzers (min/max, mean/std, quantiles,
  vocabularies, class counts) and the numpy transforms preprocessing applies in batches;
- :mod:`tasks.features.layers`: the same transforms as a Keras layer that exported models
  carry, so serving cannot skew from training.
"""
