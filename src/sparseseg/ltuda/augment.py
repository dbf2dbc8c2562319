"""Weak and strong views, and cross-set CutMix.

As in TorchIO, the random part only draws parameters (``*_params`` functions take a
:class:`torch.Generator`); applying them is deterministic, so tests can check exact results.

* Weak view (teacher): scale 0.75-1.25 with p=0.5 and rotation +-30 degrees with p=0.5, the same
  warp for image (bilinear) and labels (nearest). Not in the paper, on by default: gamma
  0.7-1.5 and contrast 0.5-1.6 (each p=0.5, :func:`tone_params`), since one scanner's or
  patient's blood pool can sit at twice another's z-score and a channel learned from a few
  patients of one dataset otherwise fails on the others.
* Strong views (student): the weak view plus intensity jitter (contrast, brightness, Gaussian
  noise, blur), then CutMix: a box of 2-40 % of the image area, aspect ratio 0.3-3.33, pasted
  from another sample of the batch into image, labels and labeled-channel masks alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def weak_params(
    batch: int,
    *,
    scale: tuple[float, float] = (0.75, 1.25),
    rotation: float = 30.0,
    p_scale: float = 0.5,
    p_rotation: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one 2x3 affine matrix per sample (normalised coordinates, for ``affine_grid``)."""
    s = _uniform(batch, *scale, generator)
    s = torch.where(torch.rand(batch, generator=generator) < p_scale, s, torch.ones(batch))
    angle = _uniform(batch, -rotation, rotation, generator) * math.pi / 180
    angle = torch.where(torch.rand(batch, generator=generator) < p_rotation, angle,
                        torch.zeros(batch))
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return theta


def apply_affine(
    theta: torch.Tensor, image: torch.Tensor, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp images bilinearly and labels (``(B, C, H, W)`` masks) with nearest neighbour.

    Outside the image, intensities take the sample's minimum and labels 0.
    """
    theta = theta.to(image.device, image.dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    low = image.amin(dim=(1, 2, 3), keepdim=True)
    warped = F.grid_sample(image - low, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False) + low
    if labels is None:
        return warped, None
    grid = F.affine_grid(theta, list(labels.shape), align_corners=False)
    out = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)
    return warped, out


@dataclass
class ToneParams:
    """Per-sample gamma and contrast of the weak view (1 = unchanged)."""

    gamma: torch.Tensor
    contrast: torch.Tensor


def tone_params(
    batch: int,
    *,
    gamma: tuple[float, float] = (0.7, 1.5),
    contrast: tuple[float, float] = (0.5, 1.6),
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> ToneParams:
    """Draw gamma and contrast factors, each applied with probability ``p`` (log-uniform)."""

    def draw(low: float, high: float) -> torch.Tensor:
        value = torch.exp(_uniform(batch, math.log(low), math.log(high), generator))
        return torch.where(torch.rand(batch, generator=generator) < p, value,
                           torch.ones(batch))

    return ToneParams(gamma=draw(*gamma), contrast=draw(*contrast))


def apply_tone(params: ToneParams, image: torch.Tensor) -> torch.Tensor:
    """Gamma on each sample's own ``[min, max]`` range, then contrast about its mean.

    ``(B, 1, H, W)`` images; an unchanged sample (both factors 1) comes back as it was.
    """
    view = (-1, 1, 1, 1)
    dev = image.device
    low = image.amin(dim=(1, 2, 3), keepdim=True)
    span = (image.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-6)
    unit = ((image - low) / span).clamp(0, 1)
    out = unit ** params.gamma.view(view).to(dev, image.dtype) * span + low
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * params.contrast.view(view).to(dev, image.dtype) + mean


@dataclass
class IntensityParams:
    """Per-sample intensity jitter: ``x * contrast + brightness``, noise, blur flag."""

    contrast: torch.Tensor
    brightness: torch.Tensor
    noise: torch.Tensor
    blur: torch.Tensor


def intensity_params(batch: int, generator: torch.Generator | None = None) -> IntensityParams:
    """Draw intensity jitter for a strong view (images are z-scored)."""
    apply = (torch.rand(batch, generator=generator) < 0.8).float()
    return IntensityParams(
        contrast=1 + apply * _uniform(batch, -0.25, 0.25, generator),
        brightness=apply * _uniform(batch, -0.25, 0.25, generator),
        noise=(torch.rand(batch, generator=generator) < 0.5).float()
        * _uniform(batch, 0.0, 0.15, generator),
        blur=torch.rand(batch, generator=generator) < 0.3,
    )


def apply_intensity(
    params: IntensityParams, image: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply :class:`IntensityParams` to ``(B, 1, H, W)`` images."""
    view = (-1, 1, 1, 1)
    dev = image.device
    out = image * params.contrast.view(view).to(dev) + params.brightness.view(view).to(dev)
    noise = torch.randn(image.shape, generator=generator).to(dev)
    out = out + noise * params.noise.view(view).to(dev)
    if params.blur.any():
        kernel = torch.tensor([0.25, 0.5, 0.25], device=dev)
        kernel = (kernel[:, None] * kernel[None, :]).view(1, 1, 3, 3).to(image.dtype)
        blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel)
        out = torch.where(params.blur.view(view).to(dev), blurred, out)
    return out


@dataclass
class CutMixParams:
    """For each sample: the partner it takes a box from, and the box ``(top, left, h, w)``."""

    partner: torch.Tensor
    boxes: torch.Tensor


def cutmix_params(
    batch: int,
    height: int,
    width: int,
    *,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> CutMixParams:
    """Draw a partner (another sample when ``batch > 1``) and a box for every sample."""
    if batch > 1:
        shift = torch.randint(1, batch, (1,), generator=generator).item()
        partner = (torch.arange(batch) + shift) % batch
    else:
        partner = torch.zeros(1, dtype=torch.long)
    boxes = torch.zeros(batch, 4, dtype=torch.long)
    for b in range(batch):
        a = _uniform(1, *area, generator).item() * height * width
        log_r = _uniform(1, math.log(aspect[0]), math.log(aspect[1]), generator).item()
        r = math.exp(log_r)
        h = max(1, min(height, round(math.sqrt(a * r))))
        w = max(1, min(width, round(math.sqrt(a / r))))
        top = torch.randint(0, height - h + 1, (1,), generator=generator).item()
        left = torch.randint(0, width - w + 1, (1,), generator=generator).item()
        boxes[b] = torch.tensor([top, left, h, w])
    return CutMixParams(partner, boxes)


def box_masks(params: CutMixParams, height: int, width: int) -> torch.Tensor:
    """``(B, 1, H, W)`` bool masks of the boxes."""
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    top, left, h, w = (params.boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return inside[:, None]


def apply_cutmix(params: CutMixParams, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Paste each sample's box from its partner, identically in every ``(B, C, H, W)`` tensor.

    Tensors of shape ``(B, C)`` (per-channel "labeled" flags) are first expanded to the
    image grid, so that mixed samples know which pixels' labels are known.
    """
    out = []
    shape = None
    for t in tensors:
        if t.ndim == 4:
            shape = t.shape[-2:]
            break
    if shape is None:
        raise ValueError("apply_cutmix needs at least one (B, C, H, W) tensor")
    mask = None
    for t in tensors:
        if t.ndim == 2:
            t = t[:, :, None, None].expand(-1, -1, *shape)
        if mask is None:
            mask = box_masks(params, *shape).to(t.device)
        partner = params.partner.to(t.device)
        out.append(torch.where(mask, t[partner], t))
    return out
