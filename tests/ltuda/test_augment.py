import torch

from sparseseg.ltuda.augment import (
    CutMixParams,
    apply_affine,
    apply_cutmix,
    box_masks,
    cutmix_params,
    weak_params,
)


def test_cutmix_moves_image_labels_and_masks_together():
    batch, h, w = 3, 8, 10
    image = torch.arange(batch, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, h, w)
    labels = torch.zeros(batch, 2, h, w)
    labels[1, 0] = 1
    labeled = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    params = CutMixParams(torch.tensor([1, 2, 0]), torch.tensor([[2, 3, 4, 5]] * 3))
    img, lab, mask = apply_cutmix(params, image, labels, labeled)
    box = torch.zeros(h, w, dtype=torch.bool)
    box[2:6, 3:8] = True
    assert torch.all(img[0, 0][box] == 1) and torch.all(img[0, 0][~box] == 0)
    assert torch.all(lab[0, 0][box] == 1) and torch.all(lab[0, 0][~box] == 0)
    assert torch.all(lab[1, 0] == 1 * ~box)  # sample 1 takes sample 2's empty box
    # sample 1 (labels organ 1) receives a box from sample 2 (labels organ 2)
    assert torch.all(mask[1, 0][box] == 0) and torch.all(mask[1, 1][box] == 1)
    assert torch.all(mask[1, 0][~box] == 1) and torch.all(mask[1, 1][~box] == 0)


def test_cutmix_params_box_sizes_and_partner():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        p = cutmix_params(4, 64, 64, generator=g)
        assert torch.all(p.partner != torch.arange(4))
        area = box_masks(p, 64, 64).sum(dim=(1, 2, 3)).float() / 64**2
        assert torch.all(area > 0.01) and torch.all(area <= 0.41)


def test_weak_view_warps_image_and_labels_alike():
    g = torch.Generator().manual_seed(1)
    theta = weak_params(4, p_scale=1.0, p_rotation=1.0, generator=g)
    image = torch.zeros(4, 1, 32, 32)
    image[:, :, 10:20, 12:24] = 1.0
    _, labels = apply_affine(theta, image, image.clone())
    warped, _ = apply_affine(theta, image)
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    agree = ((warped > 0.5) == (labels > 0.5)).float().mean()
    assert agree > 0.97
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    same, _ = apply_affine(identity, image[:1])
    assert torch.allclose(same, image[:1], atol=1e-5)
