"""aqaa.merge.merge_state_dicts: DESIGN.md 9."""

import pytest
import torch

from aqaa.merge import merge_state_dicts


def _sd(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g).to(dtype), "b": torch.randn(3, generator=g).to(dtype),
            "step": torch.tensor(7)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_identical_models_merge_to_themselves(dtype):
    sd = _sd(0, dtype)
    out = merge_state_dicts([sd, sd, sd], [5, 5, 1])
    for k in sd:
        assert out[k].dtype == sd[k].dtype and torch.equal(out[k], sd[k])


def test_one_hot_weights_return_that_model():
    a, b, c = _sd(0), _sd(1), _sd(2)
    out = merge_state_dicts([a, b, c], [1, 0, 0])
    assert all(torch.equal(out[k], a[k]) for k in a)
    out = merge_state_dicts([a, b, c], [0, 3, 0])
    assert all(torch.equal(out[k], b[k]) for k in b)


def test_weighted_average_formula():
    a, b, c = _sd(0), _sd(1), _sd(2)
    out = merge_state_dicts([a, b, c], [5, 5, 1])
    expect = (5 * a["w"].double() + 5 * b["w"].double() + c["w"].double()) / 11
    torch.testing.assert_close(out["w"], expect.float())


def test_mismatches_raise_naming_the_key():
    a = _sd(0)
    b = dict(_sd(1))
    b["w"] = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="key 'w'"):
        merge_state_dicts([a, b], [1, 1])
    c = dict(_sd(1))
    del c["b"]
    with pytest.raises(ValueError, match="lacks key 'b'"):
        merge_state_dicts([a, c], [1, 1])
    d = dict(_sd(1), extra=torch.zeros(1))
    with pytest.raises(ValueError, match="unexpected key 'extra'"):
        merge_state_dicts([a, d], [1, 1])
    with pytest.raises(ValueError, match="weights"):
        merge_state_dicts([a, a], [1])
    with pytest.raises(ValueError, match="sum to 0"):
        merge_state_dicts([a, a], [0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        merge_state_dicts([a, a], [1, -1])
