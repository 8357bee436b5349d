"""Encrypted pandas DataFrames: encrypted by their owners, merged and aggregated by a server.

>>> engine = ClientEngine(keys_path="~/.cache/my_keys")          # doctest: +SKIP
>>> left = engine.encrypt_from_pandas(df_left, keys=["id"])      # doctest: +SKIP
>>> joined = left.merge(right, how="left", on="id")              # on the server  # doctest: +SKIP
>>> engine.decrypt_to_pandas(joined)                             # doctest: +SKIP
"""

from ._aggregate import EncryptedAggregate
from .client_engine import ClientEngine, default_keys_path
from .dataframe import EncryptedDataFrame, EncryptedGroupBy, load

__all__ = ["ClientEngine", "EncryptedAggregate", "EncryptedDataFrame", "EncryptedGroupBy", "default_keys_path", "load"]
