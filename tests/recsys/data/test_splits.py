import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys.data.splits import assign_splits, build_vocab, time_order


def test_vocab_orders_numeric_ids_numerically_then_text():
    assert build_vocab(["10", "2", "b", "a", "2"], start=1) == {"2": 1, "10": 2, "a": 3, "b": 4}


def test_time_ties_keep_original_row_order():
    events = [
        {"timestamp": 5, "src": 0, "line": 9, "item": "late-row"},
        {"timestamp": 5, "src": 0, "line": 3, "item": "early-row"},
        {"timestamp": 1, "src": 1, "line": 1, "item": "first"},
    ]
    assert [e["item"] for e in time_order(events)] == ["first", "early-row", "late-row"]


def test_leave_one_out_holds_out_the_last_two():
    assert assign_splits(5, "leave_one_out", "u") == ["train", "train", "train", "valid", "test"]


def test_a_split_needs_three_events():
    with pytest.raises(ValueError, match="at least 3"):
        assign_splits(2, "leave_one_out", "u")


@given(n=st.integers(3, 400), seed=st.integers(0, 5), user=st.text(min_size=1, max_size=8))
def test_random_split_is_deterministic_per_user_and_near_its_ratios(n, seed, user):
    labels = assign_splits(n, "random", user, (0.8, 0.1, 0.1), seed)
    assert labels == assign_splits(n, "random", user, (0.8, 0.1, 0.1), seed)
    assert len(labels) == n
    assert labels.count("valid") >= 1 and labels.count("test") >= 1
    assert abs(labels.count("test") - 0.1 * n) <= 1
    assert labels.count("train") >= n - 2 - 0.2 * n - 1


def test_vocabularies_order_ids_of_any_length_without_converting_them():
    from recsys.data.splits import build_vocab

    huge = "9" * 10_000  # int() refuses more than 4,300 digits
    vocab = build_vocab(["10", "9", huge, "007", "7", "abc", "²"], start=1)
    assert list(vocab) == ["007", "7", "9", "10", huge, "abc", "²"]
