import torch

from sparseseg.ltuda.pseudo import confident_mask, merge_pseudo_labels


def _pixels(*values):
    return torch.tensor(values, dtype=torch.float32).T.reshape(1, -1, 1, len(values))


def test_merge_keeps_teacher_for_unlabeled_and_gt_for_labeled():
    # 3 organs, 4 pixels; the sample's dataset labels organ 1 only.
    probs = _pixels(
        [0.9, 0.1, 0.1],  # teacher: organ 1, GT says not organ 1 -> background
        [0.1, 0.8, 0.3],  # teacher: organ 2 (unlabeled) -> kept
        [0.2, 0.9, 0.1],  # teacher: organ 2, but GT organ 1 -> organ 1
        [0.3, 0.2, 0.4],  # teacher: background -> background
    )
    gt = _pixels([0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0])
    out = merge_pseudo_labels(probs, gt, torch.tensor([[1.0, 0.0, 0.0]]))
    expected = _pixels([0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0])
    assert torch.equal(out, expected)
    assert out.sum(dim=1).max() <= 1  # exclusive


def test_fully_labeled_sample_equals_ground_truth():
    probs = torch.rand(2, 2, 5, 5)
    gt = torch.zeros(2, 2, 5, 5)
    gt[:, 0, :2] = 1
    gt[:, 1, 3:] = 1
    out = merge_pseudo_labels(probs, gt, torch.ones(2, 2))
    assert torch.equal(out, gt)


def test_labeled_organ_known_absent_does_not_hide_an_unlabeled_one():
    # The dataset labels organ 1 and says it is absent; the teacher prefers organ 1 (0.9) but
    # also finds organ 2 (0.7 >= 0.5) there: the pseudo-label is organ 2, not background.
    probs = _pixels([0.9, 0.7, 0.1], [0.9, 0.4, 0.1])
    gt = _pixels([0, 0, 0], [0, 0, 0])
    out = merge_pseudo_labels(probs, gt, torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.equal(out, _pixels([0, 1, 0], [0, 0, 0]))


def test_confident_mask_trusts_labeled_channels_gt_organs_and_sure_teacher_pixels():
    # 2 organs, the sample's dataset labels organ 1; 4 pixels.
    probs = _pixels(
        [0.6, 0.95],  # organ 2 sure (yes): known; organ 1 labeled: known
        [0.6, 0.5],  # organ 2 unsure: unknown
        [0.6, 0.03],  # organ 2 sure (no): known
        [0.6, 0.5],  # organ 2 unsure, but the ground truth puts organ 1 here: known
    )
    gt = _pixels([0, 0], [0, 0], [0, 0], [1, 0])
    mask = confident_mask(probs, gt, torch.tensor([[1.0, 0.0]]), 0.9)
    assert torch.equal(mask, _pixels([1, 1], [1, 0], [1, 1], [1, 1]))
    # Per-pixel "labeled" masks (CutMix) give the same answer.
    assert torch.equal(confident_mask(probs, gt, torch.tensor([[1.0, 0.0]])[:, :, None, None]
                                      .expand(1, 2, 1, 4), 0.9), mask)
    # A stricter threshold trusts less; 0 trusts every pixel (the paper).
    assert confident_mask(probs, gt, torch.tensor([[1.0, 0.0]]), 0.99).sum() < mask.sum()
    assert torch.equal(confident_mask(probs, gt, torch.tensor([[1.0, 0.0]]), 0.0),
                       torch.ones_like(probs))
