import torch

from sparseseg.ltuda.classify import one_hot_organs, organs_to_classes, threshold_classify


def test_threshold_classifier():
    probs = torch.tensor([[0.2, 0.6, 0.49], [0.7, 0.55, 0.1]]).reshape(1, 2, 1, 3)
    assert threshold_classify(probs).tolist() == [[[2, 1, 0]]]


def test_one_hot_round_trip():
    classes = torch.tensor([[[0, 1, 2, 3]]])
    masks = one_hot_organs(classes, 3)
    assert masks.shape == (1, 3, 1, 4)
    assert torch.equal(organs_to_classes(masks), classes)
