"""Data sources and formats: where raw data comes from and how datasets are stored.

- :mod:`tasks.data.sources`: the sources a use case declares (IDX images, tabular
  CSV/Parquet with a typed schema), validated file by file, read as column batches, with
  per-row rejections for quarantine;
- :mod:`tasks.data.idx`: the IDX (MNIST) format, reader and writer;
- :mod:`tasks.data.tfrecord`: the TFRecord contract of preprocessed datasets, writer and
  ``tf.data`` reader together.
"""

from tasks.data.idx import IdxFormatError
from tasks.data.sources import GENERATED, Column, IdxImageSource, SourceError, TabularSource

__all__ = ["GENERATED", "Column", "IdxFormatError", "IdxImageSource", "SourceError",
           "TabularSource"]
