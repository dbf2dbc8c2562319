"""Local attention soft-copy against a naive per-pixel reference."""

from __future__ import annotations

import pytest
import torch

import sparseseg.oneseg.attention as sparseseg_attention
from sparseseg.oneseg.attention import (
    LocalAttentionCopy,
    dense_local_copy,
    local_attention_weights,
    multi_reference_copy,
    soft_copy,
)


def naive_copy(q, k, v, radius, temperature):
    return naive_multi_copy(q, [k], [v], radius, temperature)


def test_matches_naive_reference_on_random_input() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 5, 7, 9, generator=g), torch.randn(2, 5, 7, 9, generator=g)
    v = torch.randn(2, 3, 7, 9, generator=g)
    for radius, temp in [(1, 1.0), (2, 0.3), (4, 2.0)]:
        want = naive_copy(q, k, v, radius, temp)
        got = LocalAttentionCopy(radius=radius, temperature=temp)(q, k, v)
        assert torch.allclose(got, want, atol=1e-5), (radius, temp)
        # Both vectorised paths: masked dense product and unfolded windows.
        dense = dense_local_copy(q, k, v, radius=radius, temperature=temp)
        weights = local_attention_weights(q, k, radius=radius, temperature=temp)
        unfolded = soft_copy(weights, v, radius=radius)
        assert torch.allclose(dense, want, atol=1e-5)
        assert torch.allclose(unfolded, want, atol=1e-5)


def test_large_maps_take_the_unfold_path_with_the_same_result() -> None:
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 3, 50, 50, generator=g), torch.randn(1, 3, 50, 50, generator=g)
    v = torch.rand(1, 2, 50, 50, generator=g)
    got = LocalAttentionCopy(radius=3, temperature=0.5)(q, k, v)
    assert torch.allclose(got, dense_local_copy(q, k, v, radius=3, temperature=0.5), atol=1e-5)


def test_out_of_image_offsets_get_no_weight() -> None:
    q = torch.randn(1, 4, 5, 5)
    weights = local_attention_weights(q, q, radius=2)
    # Corner pixel (0, 0): only the 3 x 3 in-image part of its 5 x 5 window is valid.
    corner = weights[0, :, 0].view(5, 5)
    assert torch.allclose(corner.sum(), torch.tensor(1.0))
    assert torch.all(corner[:2, :] == 0) and torch.all(corner[:, :2] == 0)


def test_sharp_attention_on_unit_features_copies_exactly() -> None:
    feats = torch.nn.functional.normalize(torch.randn(1, 16, 10, 10), dim=1)
    labels = torch.rand(1, 2, 10, 10)
    out = LocalAttentionCopy(radius=3, temperature=0.005)(feats, feats, labels)
    assert torch.allclose(out, labels, atol=1e-4)


def test_gradients_flow_to_features() -> None:
    q = torch.randn(1, 4, 6, 6, requires_grad=True)
    k = torch.randn(1, 4, 6, 6, requires_grad=True)
    LocalAttentionCopy(radius=2)(q, k, torch.rand(1, 1, 6, 6)).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is not None and k.grad.abs().sum() > 0


def naive_multi_copy(q, keys, values, radius, temperature):
    """Per-pixel reference: one softmax over the windows of every reference."""
    b, _, h, w = q.shape
    out = torch.zeros(b, values[0].shape[1], h, w, dtype=q.dtype)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                logits, vals = [], []
                for k, v in zip(keys, values, strict=True):
                    for di in range(-radius, radius + 1):
                        for dj in range(-radius, radius + 1):
                            ii, jj = i + di, j + dj
                            if 0 <= ii < h and 0 <= jj < w:
                                logits.append((q[n, :, i, j] * k[n, :, ii, jj]).sum() / temperature)
                                vals.append(v[n, :, ii, jj])
                a = torch.softmax(torch.stack(logits), 0)
                out[n, :, i, j] = (a[:, None] * torch.stack(vals)).sum(0)
    return out


def test_multi_reference_copy_matches_naive_reference_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 6, 7, generator=g)
    keys = [torch.randn(2, 4, 6, 7, generator=g) for _ in range(3)]
    values = [torch.randn(2, 3, 6, 7, generator=g) for _ in range(3)]
    for radius, temp in [(1, 1.0), (2, 0.4)]:
        want = naive_multi_copy(q, keys, values, radius, temp)
        got = multi_reference_copy(q, keys, values, radius=radius, temperature=temp)
        assert torch.allclose(got, want, atol=1e-5), (radius, temp)
        copy = LocalAttentionCopy(radius=radius, temperature=temp)
        assert torch.allclose(copy.copy_from(q, keys, values), want, atol=1e-5)
    # Large maps take the unfolded-window path.
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 3, 50, 50, generator=g)
    keys = [torch.randn(1, 3, 50, 50, generator=g) for _ in range(2)]
    values = [torch.rand(1, 2, 50, 50, generator=g) for _ in range(2)]
    unfolded = multi_reference_copy(q, keys, values, radius=2, temperature=0.5)
    monkeypatch.setattr(sparseseg_attention, "DENSE_MAX_PIXELS", 50 * 50)
    dense = multi_reference_copy(q, keys, values, radius=2, temperature=0.5)
    assert torch.allclose(unfolded, dense, atol=1e-5)


def test_one_reference_is_the_plain_copy_and_a_duplicate_changes_nothing() -> None:
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 5, 8, 8, generator=g), torch.randn(1, 5, 8, 8, generator=g)
    v = torch.rand(1, 2, 8, 8, generator=g)
    plain = LocalAttentionCopy(radius=2, temperature=0.3)(q, k, v)
    assert torch.allclose(multi_reference_copy(q, [k], [v], radius=2, temperature=0.3), plain,
                          atol=1e-6)
    # The same reference twice halves every weight and gives the same copy.
    assert torch.allclose(
        multi_reference_copy(q, [k, k], [v, v], radius=2, temperature=0.3), plain, atol=1e-6
    )


def test_the_best_matching_reference_wins_under_sharp_attention() -> None:
    feats = torch.nn.functional.normalize(torch.randn(1, 16, 9, 9), dim=1)
    other = torch.nn.functional.normalize(torch.randn(1, 16, 9, 9), dim=1)
    labels, noise = torch.rand(1, 2, 9, 9), torch.rand(1, 2, 9, 9)
    out = multi_reference_copy(feats, [other, feats], [noise, labels], radius=2,
                               temperature=0.005)
    assert torch.allclose(out, labels, atol=1e-3)


def test_multi_reference_copy_refuses_mismatched_lists() -> None:
    q = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="as many values as keys"):
        multi_reference_copy(q, [q, q], [q], radius=1)
    with pytest.raises(ValueError, match="at least one reference"):
        multi_reference_copy(q, [], [], radius=1)


def _one_hot_blob(g: torch.Generator, rows: slice, cols: slice, h: int = 20, w: int = 24
                  ) -> torch.Tensor:
    """``(2, 3, h, w)`` soft one-hot values: background everywhere but a blob of soft labels."""
    v = torch.zeros(2, 3, h, w)
    v[:, 0] = 1.0
    blob = torch.rand(2, 3, h, w, generator=g)[..., rows, cols]
    v[..., rows, cols] = blob / blob.sum(1, keepdim=True)
    return v


@pytest.mark.parametrize(
    ("rows", "cols"),
    [(slice(8, 11), slice(9, 12)),  # a small label: only a box around it is computed
     (slice(0, 2), slice(20, 24)),  # in a corner: the box is clipped
     (slice(0, 20), slice(3, 5))],  # the box covers the whole map
)
def test_background_skips_far_pixels_with_the_same_result(rows, cols) -> None:
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, 20, 24, generator=g)
    keys = [torch.randn(2, 4, 20, 24, generator=g) for _ in range(2)]
    values = [_one_hot_blob(g, rows, cols), _one_hot_blob(g, slice(9, 10), slice(10, 12))]
    for radius, temp in [(1, 1.0), (3, 0.2)]:
        want = naive_multi_copy(q, keys, values, radius, temp)
        got = multi_reference_copy(q, keys, values, radius=radius, temperature=temp,
                                   background=0)
        assert torch.allclose(got, want, atol=1e-5), (rows, cols, radius)
        plain = multi_reference_copy(q, keys, values, radius=radius, temperature=temp)
        assert torch.allclose(got, plain, atol=1e-6)


def test_background_only_references_copy_pure_background() -> None:
    q = torch.randn(1, 4, 6, 6)
    values = torch.zeros(1, 3, 6, 6)
    values[:, 0] = 1.0
    out = LocalAttentionCopy(radius=2).copy_from(q, [q], [values], background=0)
    assert torch.equal(out, values)
