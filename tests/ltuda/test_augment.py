import torch

from sparseseg.ltuda.augment import (
    CutMixParams,
    ToneParams,
    apply_affine,
    apply_cutmix,
    apply_tone,
    box_masks,
    cutmix_params,
    tone_params,
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


def test_tone_identity_leaves_the_image_alone():
    image = torch.randn(3, 1, 16, 16)
    params = tone_params(3, p=0.0)
    assert torch.allclose(apply_tone(params, image), image, atol=1e-5)


def test_tone_gamma_and_contrast_move_intensities_as_drawn():
    image = torch.linspace(0, 1, 256).view(1, 1, 16, 16).repeat(2, 1, 1, 1)
    params = ToneParams(gamma=torch.tensor([2.0, 1.0]), contrast=torch.tensor([1.0, 0.5]))
    out = apply_tone(params, image)
    assert torch.allclose(out[0], image[0] ** 2, atol=1e-5)  # gamma on [min, max] = [0, 1]
    mean = image[1].mean()
    assert torch.allclose(out[1], (image[1] - mean) * 0.5 + mean, atol=1e-5)
    assert torch.allclose(out[1].mean(), mean, atol=1e-5)  # contrast keeps the mean


def test_tone_params_stay_in_range_and_are_reproducible():
    params = tone_params(500, generator=torch.Generator().manual_seed(0))
    again = tone_params(500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(params.gamma, again.gamma) and torch.equal(params.contrast, again.contrast)
    changed = params.gamma != 1
    assert 0.35 < changed.float().mean() < 0.65  # p = 0.5
    assert params.gamma[changed].min() >= 0.7 - 1e-6 and params.gamma.max() <= 1.5 + 1e-6
    assert params.contrast.min() >= 0.5 - 1e-6 and params.contrast.max() <= 1.6 + 1e-6
