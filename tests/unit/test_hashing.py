"""Record hashes by transforms/hashing.py equal pandas' hash_pandas_object, which stored hashes were made by."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transforms.hashing import row_hashes, text_hashes


def pandas_hashes(values: pd.Series | pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(values, index=False).to_numpy()


def random_texts(rng: np.random.Generator, n: int) -> list[str | None]:
    """Texts of 0 to 40 characters, ASCII and Chinese, some missing: every SipHash block count."""
    alphabet = list("0123456789X") + list("张王李赵残联民政人社公安")
    lengths = rng.integers(0, 41, n)
    return [None if rng.random() < 0.05 else "".join(rng.choice(alphabet, int(k))) for k in lengths]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_text_hashes_equal_pandas_for_any_length_and_missing_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    texts = pd.Series(random_texts(rng, 3000), dtype="string")
    assert (text_hashes(texts) == pandas_hashes(texts)).all()
    # a slice (an Arrow array with an offset) and few distinct values (hashed through the dictionary)
    assert (text_hashes(texts.iloc[7:]) == pandas_hashes(texts.iloc[7:])).all()
    few = pd.Series(rng.choice(["dibao", "", "特困", None], 3000), dtype="string")
    assert (text_hashes(few) == pandas_hashes(few)).all()


def test_numbers_of_one_width_equal_pandas() -> None:
    ids = pd.Series([f"33010619{n:08d}1{n % 10}" for n in range(2000)], dtype="string")
    assert ids.str.len().eq(18).all()
    assert (text_hashes(ids) == pandas_hashes(ids)).all()


def test_edge_texts() -> None:
    for values in ([], [None, None], [""], ["abcdefgh"], ["abcdefghi", None, "中" * 17]):
        texts = pd.Series(values, dtype="string")
        assert (text_hashes(texts) == pandas_hashes(texts)).all()


def test_row_hashes_equal_pandas_over_mixed_columns() -> None:
    rng = np.random.default_rng(7)
    n = 500
    frame = pd.DataFrame(
        {
            "id_number": pd.Series([f"{330106198001010000 + i}" for i in range(n)], dtype="string"),
            "name": pd.Series(random_texts(rng, n), dtype="string"),
            "birth_date": pd.Series(pd.to_datetime(rng.integers(0, 20000, n), unit="D")).astype(
                "datetime64[us]"
            ),
            "level": pd.array(rng.integers(1, 5, n), dtype="Int64"),
            "dibao_standard": pd.array(np.where(rng.random(n) < 0.3, np.nan, 1150.0), dtype="Float64"),
            "dibao": rng.random(n) < 0.5,
            "cares": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        }
    )
    assert (row_hashes(frame) == pandas_hashes(frame)).all()
    assert (row_hashes(frame.iloc[:0]) == pandas_hashes(frame.iloc[:0])).all()
