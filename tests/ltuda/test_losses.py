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


def test_exclusion_knows_every_channel_on_a_labeled_organ():
    from sparseseg.ltuda.losses import with_exclusion

    y = torch.zeros(2, 3, 4, 4)
    y[0, 0, 1:3, 1:3] = 1  # sample 0 labels organ 0 only
    y[1, 1, 0, :] = 1  # sample 1 labels organs 1 and 2
    y[1, 2, 3, :] = 1
    labeled = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    known = with_exclusion(y, labeled)
    assert torch.equal(known[0, 0], torch.ones(4, 4))  # a labeled channel: everywhere
    organ0 = y[0, 0] > 0
    for c in (1, 2):  # unlabeled channels: known (absent) exactly on organ 0's pixels
        assert torch.equal(known[0, c] > 0, organ0)
    rows = torch.zeros(4, 4, dtype=torch.bool)
    rows[0, :] = rows[3, :] = True
    assert torch.equal(known[1, 0] > 0, rows) and (known[1, 1:] == 1).all()
    # The targets there are 0: the loss teaches "absent", never the organ.
    assert not (y[0, 1:] * known[0, 1:]).any()
    # A per-pixel mask (after CutMix): an organ pixel outside the known region teaches nothing.
    pixel = labeled[:, :, None, None].expand(2, 3, 4, 4).clone()
    pixel[0, 0, 1, 1] = 0
    known = with_exclusion(y, pixel)
    assert known[0, 1, 1, 1] == 0 and known[0, 1, 2, 2] == 1


def test_exclusion_gives_unlabeled_channels_a_gradient_on_labeled_organs_only():
    from sparseseg.ltuda.losses import supervised_loss, with_exclusion

    y = torch.zeros(1, 2, 4, 4)
    y[0, 0, :2] = 1
    labeled = torch.tensor([[1.0, 0.0]])
    for exclusion in (False, True):
        x = torch.zeros(1, 2, 4, 4, requires_grad=True)
        known = with_exclusion(y, labeled) if exclusion else labeled
        supervised_loss(x, y, known, dice=True).backward()
        moved = x.grad[0, 1] != 0
        assert torch.equal(moved, (y[0, 0] > 0) if exclusion else torch.zeros(4, 4, dtype=bool))
        assert (x.grad[0, 1][moved] > 0).all()  # pushed toward "absent"
