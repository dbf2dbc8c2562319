"""Pictures of label volumes: overlays on the image, prediction-vs-reference maps, grids.

Everything here is pure (arrays in, arrays out) except :func:`write_png`, which writes a
picture atomically. Only numpy, scipy and Pillow are used (no matplotlib). One concept per
module, all re-exported here (``from sparseseg.viz import comparison_figure``):

* :mod:`~sparseseg.viz.planes`: planes of a volume, display flips, pixel spacing, resampling;
* :mod:`~sparseseg.viz.paint`: grey images, label fills and outlines, error maps, colours;
* :mod:`~sparseseg.viz.layout`: panels, figures, grids, legends, and the shared Pillow
  canvas/font/text helper;
* :mod:`~sparseseg.viz.figures`: the comparison, side-by-side and preview figures;
* :mod:`~sparseseg.viz.png`: PNG paths and atomic writes.

Orientation: an axial plane (fixed ``k``, the slice axis) shows ``i`` across and ``j`` down; a
coronal plane (fixed ``j``) and a sagittal plane (fixed ``i``) show ``k`` upwards. Given the
volume's direction matrix, axes are flipped to the radiological convention (patient's right on
the viewer's left, anterior up, superior up) when the matrix is close to axis-aligned
(:func:`display_flips`); for oblique volumes the voxel axes are shown as they are. Slice indices
in captions are always the file's voxel indices. Pixels are resampled (nearest neighbour) to
the voxel spacing, so a 3 mm axis is drawn three times as long as a 1 mm one.

Colours: each label value has a fixed colour (:func:`label_colour`), drawn as a translucent fill
with an opaque outline of the same colour. Error maps colour agreeing voxels green, extra ones
(false positives) red, missed ones (false negatives) blue and voxels given the wrong label yellow.

Example:
    >>> import numpy as np
    >>> truth = np.zeros((20, 20, 5), np.uint8); truth[5:15, 5:15, 1:4] = 1
    >>> fig = comparison_figure(np.roll(truth, 2, axis=0), truth, spacing=(1, 1, 2))
    >>> fig.rgb.dtype, fig.rgb.shape[2]
    (dtype('uint8'), 3)
"""

from __future__ import annotations

from sparseseg.viz.figures import (
    centre_index,
    comparison_figure,
    preview_figure,
    preview_slices,
    representative_slices,
    side_by_side,
)
from sparseseg.viz.layout import (
    BACKGROUND,
    ERROR_LEGEND,
    TEXT_COLOUR,
    Canvas,
    Figure,
    Panel,
    compose,
    font,
    label_legend,
    make_panel,
    mark_row,
    text_width,
)
from sparseseg.viz.paint import (
    AGREE_COLOUR,
    EXTRA_COLOUR,
    MARK_COLOUR,
    MISSED_COLOUR,
    PALETTE,
    WRONG_COLOUR,
    Colour,
    contour,
    error_categories,
    errors,
    fill,
    grey,
    intensity_limits,
    label_colour,
    outline,
)
from sparseseg.viz.planes import (
    NO_FLIPS,
    VIEWS,
    Flips,
    display_flips,
    display_size,
    plane,
    plane_spacing,
    resize_indices,
    slice_row,
)
from sparseseg.viz.png import check_png_path, write_png

__all__ = [
    "AGREE_COLOUR",
    "BACKGROUND",
    "ERROR_LEGEND",
    "EXTRA_COLOUR",
    "MARK_COLOUR",
    "MISSED_COLOUR",
    "NO_FLIPS",
    "PALETTE",
    "TEXT_COLOUR",
    "VIEWS",
    "WRONG_COLOUR",
    "Canvas",
    "Colour",
    "Figure",
    "Flips",
    "Panel",
    "centre_index",
    "check_png_path",
    "comparison_figure",
    "compose",
    "contour",
    "display_flips",
    "display_size",
    "error_categories",
    "errors",
    "fill",
    "font",
    "grey",
    "intensity_limits",
    "label_colour",
    "label_legend",
    "make_panel",
    "mark_row",
    "outline",
    "plane",
    "plane_spacing",
    "preview_figure",
    "preview_slices",
    "representative_slices",
    "resize_indices",
    "side_by_side",
    "slice_row",
    "text_width",
    "write_png",
]
