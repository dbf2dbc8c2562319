"""Prototype classifiers of LTUDA's stage 2: cosine logits, Sinkhorn assignment, momentum update.

Each class (background included) owns ``n_prototypes`` unit vectors in the embedding space. A
pixel's class logit is its largest cosine similarity to that class's prototypes. Prototypes are
not trained by gradients: after each step, the pixels of a class that the classifier already
predicts correctly are spread evenly over the class's prototypes by Sinkhorn-Knopp (balanced
optimal transport), and each prototype moves by momentum towards the mean of its pixels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, *, iterations: int = 3, epsilon: float = 0.05) -> torch.Tensor:
    """Balanced soft assignment of ``N`` items to ``M`` prototypes (Sinkhorn-Knopp).

    Args:
        scores: ``(N, M)`` similarities.
        iterations: Sinkhorn iterations.
        epsilon: Entropy regularisation (temperature of ``exp(scores / epsilon)``).

    Returns:
        ``(N, M)`` assignment whose rows sum to 1 and whose columns sum to about ``N / M``.

    Example:
        >>> q = sinkhorn(torch.randn(10, 5))
        >>> torch.allclose(q.sum(1), torch.ones(10))
        True
    """
    n, m = scores.shape
    q = torch.exp((scores - scores.max()) / epsilon).t()  # (M, N)
    q = q / q.sum().clamp_min(1e-30)
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-30) / m  # each prototype gets 1/M
        q = q / q.sum(dim=0, keepdim=True).clamp_min(1e-30) / n  # each item gets 1/N
    return (q * n).t()


class PrototypeClassifier(nn.Module):
    """Cosine classifier with several momentum-updated prototypes per class.

    Args:
        n_classes: Classes including background (class 0).
        dim: Embedding size.
        n_prototypes: Prototypes per class (5 in the paper).
        momentum: Weight of the old prototype in the update (0.999 in the paper).
        sinkhorn_iterations: Iterations of :func:`sinkhorn`.
        sinkhorn_epsilon: Its entropy regularisation.

    Example:
        >>> clf = PrototypeClassifier(n_classes=3, dim=8, n_prototypes=2)
        >>> logits, sims = clf(F.normalize(torch.randn(1, 8, 4, 4), dim=1))
        >>> logits.shape, sims.shape
        (torch.Size([1, 3, 4, 4]), torch.Size([1, 3, 2, 4, 4]))
    """

    def __init__(
        self,
        *,
        n_classes: int,
        dim: int = 64,
        n_prototypes: int = 5,
        momentum: float = 0.999,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.n_prototypes = n_prototypes
        self.momentum = momentum
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_epsilon = sinkhorn_epsilon
        init = F.normalize(torch.randn(n_classes, n_prototypes, dim), dim=-1)
        self.register_buffer("prototypes", init)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine logits of unit-norm ``(B, D, H, W)`` embeddings.

        Returns:
            ``(logits, similarities)``: ``(B, classes, H, W)`` (max over each class's
            prototypes) and ``(B, classes, prototypes, H, W)``.
        """
        # A copy: the momentum update changes the buffer in place while the graph still needs it.
        protos = self.prototypes.detach().clone()
        sims = torch.einsum("bdhw,kmd->bkmhw", embeddings, protos)
        return sims.amax(dim=2), sims

    def similarities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``(N, classes, prototypes)`` of unit-norm ``(N, D)`` embeddings.

        The same values as :meth:`forward`'s second output, for a flat set of pixels.
        """
        protos = self.prototypes.detach().clone()
        return torch.einsum("nd,kmd->nkm", embeddings, protos)

    @torch.no_grad()
    def initialize(
        self,
        embeddings: torch.Tensor,
        targets: torch.Tensor,
        *,
        iterations: int = 10,
        max_pixels: int = 4096,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Set each present class's prototypes to balanced K-means centres of its pixels.

        Spherical K-means whose assignment step is the same Sinkhorn-Knopp balancing as in
        training, so every prototype gets a share of the class's pixels. Classes without pixels
        keep their current prototypes. Call it once at the start of stage 2 so the classifier
        is meaningful from its first step (random prototypes with momentum 0.999 barely move).

        Args:
            embeddings: ``(N, D)`` unit-norm pixel embeddings.
            targets: ``(N,)`` class of each pixel.
            iterations: K-means iterations.
            max_pixels: Pixels sampled per class (for speed).
            generator: Random generator for the subsample and the initial centres.

        Returns:
            The classes whose prototypes were set.
        """
        done = []
        m = self.n_prototypes
        for c in targets.unique().tolist():
            if not 0 <= c < self.n_classes:
                continue
            x = embeddings[targets == c]
            if x.shape[0] > max_pixels:
                x = x[torch.randperm(x.shape[0], generator=generator)[:max_pixels].to(x.device)]
            start = torch.randint(0, x.shape[0], (m,), generator=generator).to(x.device)
            if x.shape[0] >= m:
                start = torch.randperm(x.shape[0], generator=generator)[:m].to(x.device)
            centres = x[start].clone()
            for _ in range(iterations):
                q = sinkhorn(x @ centres.t(), iterations=self.sinkhorn_iterations,
                             epsilon=self.sinkhorn_epsilon)
                index = q.argmax(dim=1)
                sums = torch.zeros_like(centres).index_add_(0, index, x)
                hit = torch.bincount(index, minlength=m) > 0
                centres[hit] = F.normalize(sums[hit], dim=1)
            self.prototypes[c] = F.normalize(centres, dim=1).to(self.prototypes.dtype)
            done.append(int(c))
        return done

    @torch.no_grad()
    def assign(
        self, embeddings: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Balanced assignment of each pixel to one prototype of its target class.

        Args:
            embeddings: ``(N, D)`` unit-norm pixel embeddings.
            targets: ``(N,)`` class indices.

        Returns:
            ``(N,)`` prototype index within the target class.
        """
        index = torch.zeros_like(targets)
        for c in targets.unique().tolist():
            sel = targets == c
            scores = embeddings[sel] @ self.prototypes[c].t()
            q = sinkhorn(
                scores, iterations=self.sinkhorn_iterations, epsilon=self.sinkhorn_epsilon
            )
            index[sel] = q.argmax(dim=1)
        return index

    @torch.no_grad()
    def update(
        self, embeddings: torch.Tensor, targets: torch.Tensor, assignment: torch.Tensor
    ) -> None:
        """Momentum update of each prototype towards the mean of the pixels assigned to it.

        Args:
            embeddings: ``(N, D)`` unit-norm embeddings of the pixels to learn from (the caller
                keeps only correctly predicted pixels).
            targets: ``(N,)`` their classes.
            assignment: ``(N,)`` their prototype index within the class.
        """
        if embeddings.numel() == 0:
            return
        flat = targets * self.n_prototypes + assignment
        total = self.n_classes * self.n_prototypes
        sums = torch.zeros(total, embeddings.shape[1], dtype=embeddings.dtype,
                           device=embeddings.device)
        sums.index_add_(0, flat, embeddings)
        counts = torch.bincount(flat, minlength=total)
        protos = self.prototypes.view(total, -1)
        hit = counts > 0
        new = F.normalize(sums[hit], dim=1)
        protos[hit] = F.normalize(self.momentum * protos[hit] + (1 - self.momentum) * new, dim=1)


def prototype_loss(
    similarities: torch.Tensor,
    targets: torch.Tensor,
    assignment: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    temperature: float = 0.1,
    contrast_weight: float = 0.01,
    distance_weight: float = 0.001,
) -> torch.Tensor:
    """CE on class logits + pixel-prototype contrast + pixel-prototype distance.

    Args:
        similarities: ``(N, classes, prototypes)`` cosine similarities of the pixels.
        targets: ``(N,)`` class of each pixel (merged pseudo-label).
        assignment: ``(N,)`` prototype index within the class (from Sinkhorn).
        valid: ``(N,)`` bool mask of pixels to use (default all).
        temperature: Cosine similarities are divided by it before softmax.
        contrast_weight: Weight of the contrast term (0.01 in the paper).
        distance_weight: Weight of the distance term (0.001 in the paper).

    Returns:
        Scalar loss.
    """
    if valid is not None:
        similarities, targets, assignment = similarities[valid], targets[valid], assignment[valid]
    if targets.numel() == 0:
        return similarities.sum() * 0.0
    n, k, m = similarities.shape
    ce = F.cross_entropy(similarities.amax(dim=2) / temperature, targets)
    flat_target = targets * m + assignment
    contrast = F.cross_entropy(similarities.reshape(n, k * m) / temperature, flat_target)
    own = similarities.reshape(n, k * m).gather(1, flat_target[:, None]).squeeze(1)
    distance = ((1 - own) ** 2).mean()
    return ce + contrast_weight * contrast + distance_weight * distance
