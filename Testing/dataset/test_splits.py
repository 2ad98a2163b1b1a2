"""Case-level splits: disjoint, complete, seeded, non-empty when possible."""

import pytest

from deepliver.dataset.splits import parse_ratios, split_cases
from deepliver.errors import ConfigError


def _cases(n):
    return [f"case{i:03d}" for i in range(n)]


def test_disjoint_complete_and_proportional():
    cases = _cases(20)
    s = split_cases(cases, (70, 20, 10), seed=1)
    assert (len(s.train), len(s.val), len(s.test)) == (14, 4, 2)
    assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test) and not set(s.val) & set(s.test)
    assert sorted(s.train + s.val + s.test) == cases
    assert s.to_dict() == {"seed": 1, "ratios": [70, 20, 10], "train": s.train, "val": s.val, "test": s.test}


def test_seeded_and_independent_of_input_order():
    cases = _cases(30)
    a = split_cases(cases, seed=5)
    assert split_cases(list(reversed(cases)), seed=5) == a
    assert split_cases(cases, seed=6) != a


def test_few_cases_fill_every_nonzero_split():
    s = split_cases(_cases(3), (70, 20, 10), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (1, 1, 1)
    s = split_cases(_cases(2), (80, 20, 0), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (1, 1, 0)
    s = split_cases(_cases(1), (70, 20, 10), seed=0)  # impossible: everything stays in train
    assert (len(s.train), len(s.val), len(s.test)) == (1, 0, 0)
    assert s.of("case000") == "train"


@pytest.mark.parametrize("text, message", [("70,20", "three percentages"), ("70,20,20", "sum to 100"),
                                           ("110,-10,0", ">= 0"), ("a,b,c", "TRAIN,VAL,TEST")])
def test_bad_ratios(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_ratios(text)
