"""Tabular results as plain lists of dicts, convertible to pandas."""

from typing import Any, Dict, List


class Table(List[Dict[str, Any]]):
    """A list of records (dicts with the same keys). ``to_pandas()`` makes a DataFrame."""

    def to_pandas(self) -> "Any":
        """The records as a ``pandas.DataFrame`` (needs pandas: ``pip install pandas``)."""
        try:
            import pandas
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from e
        return pandas.DataFrame(list(self))
