import torch

from sparseseg.ltuda.model import LTUDAModel
from sparseseg.ltuda.network import default_depth


def test_shapes_and_classifiers():
    model = LTUDAModel(n_organs=3, base_channels=4, depth=2, embed_dim=8, n_prototypes=2).eval()
    x = torch.randn(2, 1, 16, 16)
    logits, features = model(x)
    assert logits.shape == (2, 3, 16, 16) and features.shape == (2, 4, 16, 16)
    emb = model.projection(features)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)
    for clf in ("linear", "labeled", "unlabeled"):
        scores = model.class_scores(x, clf)
        assert scores.shape == (2, 4, 16, 16)
    linear = model.class_scores(x, "linear")
    assert torch.all(linear[:, 0] == 0.5)
    assert torch.allclose(linear[:, 1:], torch.sigmoid(logits))


def test_default_depth():
    assert default_depth(256) == 4 and default_depth(32) == 3 and default_depth(24) == 2
