"""Where the resizer puts an image: plain integer arithmetic, no torch, so that the trainer's
transforms, its training-resolution cache and ``kubevision predict`` (which maps boxes back to
the image's pixels) share one definition."""

from __future__ import annotations

from kubevision_api.modelversion import ResizeMode


def resize_geometry(
    mode: ResizeMode, output: tuple[int, int], image: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """Where the trainer's ``transforms.Resize`` puts an image: the size it scales the image
    to and the black margins it adds. One function, so that the training-resolution cache
    (``data.cache.cache_size``) can pick a size whose geometry is the original's, and the
    predictor (``kubevision predict``) resizes as the trainer does.

    Args:
        mode: the resizer mode.
        output: ``(height, width)`` of the network input, pixels.
        image: ``(height, width)`` of the image, pixels.

    Returns:
        ``((height, width), pad)``: the scaled size (crop: before the centre crop to
        ``output``); ``pad`` = ``(left, top, right, bottom)`` pixels for letterbox, None for
        squash and crop.
    """
    out_h, out_w = output
    height, width = image
    if mode is ResizeMode.SQUASH:
        return (out_h, out_w), None
    # Exact rational arithmetic: the side that sets the scale gets exactly its output size
    # (in floats, 3000 * (224 / 3000) rounds up to 225), and the other side is ceil'ed (crop)
    # or rounded half up (letterbox) from the exact product.
    if (out_h * width >= out_w * height) == (mode is ResizeMode.CROP):
        # The height sets the scale: out_h / height.
        num, den = out_h, height
    else:
        num, den = out_w, width
    if mode is ResizeMode.CROP:
        size = (max(out_h, -(-height * num // den)), max(out_w, -(-width * num // den)))
        return size, None
    size = (
        max(1, min(out_h, (2 * height * num + den) // (2 * den))),
        max(1, min(out_w, (2 * width * num + den) // (2 * den))),
    )
    left = (out_w - size[1]) // 2
    top = (out_h - size[0]) // 2
    return size, (left, top, out_w - size[1] - left, out_h - size[0] - top)
