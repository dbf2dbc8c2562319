import torch

from sparseseg.ltuda.losses import partial_bce


def test_unlabeled_channels_get_no_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (2, 3, 4, 4)).float()
    labeled = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    partial_bce(logits, target, labeled).backward()
    grad = logits.grad.abs().sum(dim=(2, 3))
    assert torch.all(grad[labeled == 0] == 0)
    assert torch.all(grad[labeled == 1] > 0)


def test_matches_bce_on_labeled_channels():
    logits = torch.randn(1, 2, 3, 3)
    target = torch.randint(0, 2, (1, 2, 3, 3)).float()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1], target[:, :1])
    got = partial_bce(logits, target, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(got, expected)


def test_spatial_mask_and_nothing_labeled():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    loss = partial_bce(logits, torch.ones(1, 1, 2, 2), mask)
    loss.backward()
    assert logits.grad[0, 0, 0, 0] != 0 and logits.grad[0, 0, 1, 1] == 0
    empty = partial_bce(logits, torch.ones(1, 1, 2, 2), torch.zeros(1, 1))
    assert empty.item() == 0


def test_partial_dice_masks_channels():
    from sparseseg.ltuda.losses import partial_dice

    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (2, 2, 4, 4)).float()
    loss = partial_dice(logits, target, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    loss.backward()
    assert 0 < loss.item() < 1
    assert torch.all(logits.grad[:, 1] == 0) and logits.grad[:, 0].abs().sum() > 0
    perfect = partial_dice(target * 40 - 20, target, torch.ones(2, 2))
    assert perfect.item() < 0.05
