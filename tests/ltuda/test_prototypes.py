import torch
from torch.nn import functional as F

from sparseseg.ltuda.prototypes import PrototypeClassifier, prototype_loss, sinkhorn


def test_sinkhorn_is_balanced():
    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(60, 5, generator=g) * 2 - 1) * 0.5
    scores[:, 0] += 0.4  # most pixels prefer prototype 0
    assert (scores.argmax(1) == 0).sum() >= 30
    q = sinkhorn(scores, iterations=3, epsilon=0.05)
    assert torch.allclose(q.sum(1), torch.ones(60), atol=1e-5)  # each pixel fully assigned
    assert q.sum(0).max() < 24  # far from the greedy 30+ on prototype 0
    assert torch.bincount(q.argmax(1), minlength=5).min() > 0
    converged = sinkhorn(scores, iterations=100, epsilon=0.05)
    assert torch.allclose(converged.sum(0), torch.full((5,), 12.0), rtol=0.05)


def test_classifier_logits_are_max_cosine():
    clf = PrototypeClassifier(n_classes=2, dim=3, n_prototypes=2)
    clf.prototypes.copy_(torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [0, -1.0, 0]]]))
    emb = torch.tensor([0.0, 0.6, 0.8]).view(1, 3, 1, 1)
    logits, sims = clf(emb)
    assert torch.allclose(logits.flatten(), torch.tensor([0.6, 0.8]))
    assert sims.shape == (1, 2, 2, 1, 1)


def test_momentum_update_moves_assigned_prototypes_only():
    clf = PrototypeClassifier(n_classes=2, dim=3, n_prototypes=2, momentum=0.9)
    start = F.normalize(torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [1, 1, 1.0]]]),
                        dim=-1)
    clf.prototypes.copy_(start)
    emb = F.normalize(torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.3, 0.0]]), dim=1)
    clf.update(emb, torch.tensor([0, 0]), torch.tensor([0, 0]))
    expected = F.normalize(0.9 * start[0, 0] + 0.1 * F.normalize(emb.sum(0), dim=0), dim=0)
    assert torch.allclose(clf.prototypes[0, 0], expected, atol=1e-6)
    assert torch.allclose(clf.prototypes[0, 1], start[0, 1])
    assert torch.allclose(clf.prototypes[1], start[1])


def test_assign_returns_index_within_class_and_loss_is_finite():
    clf = PrototypeClassifier(n_classes=3, dim=8, n_prototypes=5)
    emb = F.normalize(torch.randn(40, 8), dim=1)
    targets = torch.randint(0, 3, (40,))
    index = clf.assign(emb, targets)
    assert index.min() >= 0 and index.max() < 5
    emb4 = emb.T.reshape(1, 8, 5, 8).requires_grad_(True)
    _, sims = clf(emb4)
    flat = sims.permute(0, 3, 4, 1, 2).reshape(-1, 3, 5)
    loss = prototype_loss(flat, targets, index)
    loss.backward()
    assert torch.isfinite(loss) and emb4.grad.abs().sum() > 0


def _clusters(centres: torch.Tensor, per: int, noise: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = centres.repeat_interleave(per, 0) + noise * torch.randn(len(centres) * per,
                                                                  centres.shape[1], generator=g)
    return F.normalize(pts, dim=1)


def test_initialize_puts_prototypes_on_their_class_features():
    g = torch.Generator().manual_seed(1)
    # Two sub-clusters per class, classes in different directions; class 2 has no pixels.
    centres = F.normalize(torch.randn(3, 2, 16, generator=g), dim=-1)
    emb = torch.cat([_clusters(centres[c], 200, 0.05, seed=c) for c in range(2)])
    targets = torch.repeat_interleave(torch.arange(2), 400)
    clf = PrototypeClassifier(n_classes=3, dim=16, n_prototypes=4)
    before = clf.prototypes.clone()
    done = clf.initialize(emb, targets, generator=g)
    assert done == [0, 1]
    assert torch.allclose(clf.prototypes.norm(dim=-1), torch.ones(3, 4), atol=1e-5)
    assert torch.equal(clf.prototypes[2], before[2])  # absent class untouched
    for c in range(2):
        # Every prototype of class c lies near one of its sub-clusters, far from the other class.
        own = (clf.prototypes[c] @ centres[c].t()).amax(dim=1)
        other = (clf.prototypes[c] @ centres[1 - c].t()).amax(dim=1)
        assert (own > 0.95).all() and (other < own - 0.3).all()
        # Both sub-clusters get a prototype (balanced assignment, no collapse onto one).
        assert ((clf.prototypes[c] @ centres[c].t()).amax(dim=0) > 0.95).all()
    # The classifier is usable at once: it classifies the pixels it was built from.
    logits, _ = clf(emb.t().reshape(1, 16, 1, -1))
    assert (logits.argmax(1).flatten()[: 800] == targets).float().mean() > 0.99


def test_initialize_with_fewer_pixels_than_prototypes():
    clf = PrototypeClassifier(n_classes=2, dim=4, n_prototypes=5)
    emb = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), dim=1)
    assert clf.initialize(emb, torch.tensor([1, 1])) == [1]
    sims = clf.prototypes[1] @ emb.t()
    assert torch.isfinite(clf.prototypes).all() and (sims.amax(dim=1) > 0.99).all()
