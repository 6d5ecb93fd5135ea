"""Operations: what a person runs against a buffer.

``monitor`` (``BufferMonitor``: status, print, export, repair), ``export`` (pandas
DataFrames, CSV / Parquet), ``cli`` (the ``edgebuf`` command).
"""
