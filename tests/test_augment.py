import torch

from potstill.data.augment import AugmentConfig, augment, random_flip, random_shift


def test_shift_moves_content_by_at_most_the_bound():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    y = random_shift(x, 2)
    pos = (y[:, 0] == 1).flatten(1).float().argmax(1)
    rows, cols = pos // 9, pos % 9
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # per-image offsets, not one for the batch
    assert torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))  # the bright pixel survives (never cropped away)


def test_flip_is_per_image_and_exact():
    torch.manual_seed(0)
    x = torch.arange(2 * 16).float().reshape(2, 1, 4, 4).repeat(32, 1, 1, 1)
    y = random_flip(x)
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


def test_augment_is_reproducible_from_the_rng_state():
    cfg = AugmentConfig(shift=2, flip=True)
    x = torch.randn(16, 1, 8, 8)
    torch.manual_seed(3)
    a = augment(x, cfg)
    torch.manual_seed(3)
    assert torch.equal(a, augment(x, cfg))
    assert augment(x, AugmentConfig()) is x
