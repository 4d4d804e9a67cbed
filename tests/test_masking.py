"""Support masking modes on hand-made tensors."""

import pytest
import torch

from hmrepro.models.masking import (
    MASKING_MODES,
    apply_masking,
    get_masking_mode,
    mask_features,
    mask_image,
)


def _mask():
    """A 4×4 mask whose right half is foreground."""
    mask = torch.zeros(1, 4, 4)
    mask[..., 2:] = 1
    return mask


def _taps():
    """One full-resolution tap [1, 1, 4, 4] with negative activations inside the mask (right half)."""
    fm_source = torch.tensor([[1.0, 2.0, -3.0, 4.0]] * 4).view(1, 1, 4, 4)
    im_source = torch.tensor([[5.0, -6.0, 7.0, 8.0]] * 4).view(1, 1, 4, 4)
    return [fm_source], [im_source]


def test_registry_names():
    assert set(MASKING_MODES) == {"fm", "im", "hm", "hm-add", "hm-reverse"}
    assert get_masking_mode("hm").needs_image_taps and get_masking_mode("hm").needs_masked_image_taps
    assert not get_masking_mode("fm").needs_masked_image_taps
    assert not get_masking_mode("im").needs_image_taps
    with pytest.raises(ValueError, match="unknown masking mode"):
        get_masking_mode("nope")


def test_fm_multiplies_by_resized_mask_with_fractional_border():
    tap = torch.ones(1, 2, 3, 3)
    (masked,) = mask_features([tap], _mask())
    # 4 → 3 with align_corners=True samples x = 0, 1.5, 3: the middle column falls between 0 and 1.
    expected_row = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(masked[0, 0], expected_row.expand(3, 3))
    assert torch.allclose(masked[0, 1], expected_row.expand(3, 3))


def test_fm_and_im_by_hand():
    image_taps, masked_taps = _taps()
    (fm,) = apply_masking("fm", image_taps, None, _mask())
    assert fm[0, 0, 0].tolist() == [0.0, 0.0, -3.0, 4.0]
    (im,) = apply_masking("im", None, masked_taps, _mask())
    assert im[0, 0, 0].tolist() == [5.0, -6.0, 7.0, 8.0]


def test_hm_replaces_zero_background_and_negative_foreground():
    image_taps, masked_taps = _taps()
    (hm,) = apply_masking("hm", image_taps, masked_taps, _mask())
    # FM row = [0, 0, -3, 4]: background zeros and the negative -3 inside the mask are replaced by IM.
    assert hm[0, 0, 0].tolist() == [5.0, -6.0, 7.0, 4.0]


def test_hm_add_and_reverse_by_hand():
    image_taps, masked_taps = _taps()
    (add,) = apply_masking("hm-add", image_taps, masked_taps, _mask())
    assert add[0, 0, 0].tolist() == [5.0, -6.0, 4.0, 12.0]
    (rev,) = apply_masking("hm-reverse", image_taps, masked_taps, _mask())
    # IM row = [5, -6, 7, 8]: -6 is not > 0 so FM's 0 is used there.
    assert rev[0, 0, 0].tolist() == [5.0, 0.0, 7.0, 8.0]


def test_all_zero_mask():
    empty = torch.zeros(1, 4, 4)
    image_taps, masked_taps = _taps()
    (fm,) = apply_masking("fm", image_taps, None, empty)
    assert torch.count_nonzero(fm) == 0
    (hm,) = apply_masking("hm", image_taps, masked_taps, empty)
    assert torch.equal(hm, masked_taps[0])  # nothing of FM is positive: HM is IM everywhere
    (rev,) = apply_masking("hm-reverse", image_taps, masked_taps, empty)
    assert rev[0, 0, 0].tolist() == [5.0, 0.0, 7.0, 8.0]
    image = torch.randn(1, 3, 4, 4)
    assert torch.count_nonzero(mask_image(image, empty)) == 0


def test_mask_image_zeroes_background_on_every_channel():
    image = torch.randn(2, 3, 4, 4)
    mask = _mask().expand(2, 4, 4).to(torch.uint8)
    out = mask_image(image, mask)
    assert torch.equal(out[..., 2:], image[..., 2:])
    assert torch.count_nonzero(out[..., :2]) == 0


def test_modes_are_pure():
    image_taps, masked_taps = _taps()
    before = [t.clone() for t in image_taps + masked_taps]
    for name in MASKING_MODES:
        apply_masking(name, image_taps, masked_taps, _mask())
    assert all(torch.equal(a, b) for a, b in zip(before, image_taps + masked_taps))
