"""Open a viewer on an image with its labels and the annotation widget (``sparseseg view``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS
from sparseseg.io.empty_slices import empty_slices_file, read_empty_slices
from sparseseg.io.reader import read_label, read_volume
from sparseseg.napari.autosave import autosaved_empty_slices, find_autosave
from sparseseg.napari.layers import SLIDER_AXIS, image_layer_data, labels_layer_data, layer_name

if TYPE_CHECKING:
    import napari

    from sparseseg.napari.widget import AnnotationWidget

log = logging.getLogger(__name__)


def open_viewer(
    image: str | Path,
    *,
    labels: str | Path | None = None,
    model: str | Path | None = None,
    method: str | None = None,
    output: str | Path | None = None,
    device: str = "auto",
    hybrid_weight: float | None = None,
    refiner: str | Path | None = None,
    viewer: napari.viewer.Viewer | None = None,
) -> tuple[napari.viewer.Viewer, AnnotationWidget]:
    """Show ``image`` and its labels in a viewer with the annotation widget docked.

    Args:
        image: Volume file or DICOM folder.
        labels: Label volume on the image's grid; default: the image's autosave when there is
            one (its painted slices), else an empty labels layer. The slices listed in its
            sidecar ``NAME.empty.json`` count as painted empty.
        model: OneSeg model folder (default: the widget's default).
        method: Propagation method (default: ``oneseg`` with a model, else ``registration``).
        output: Where **Save** writes.
        device: Where to compute.
        hybrid_weight: OneSeg's share of the ``hybrid`` method's mix (default: the widget's).
        refiner: Refinement network folder (``sparseseg oneseg refine --save-model``).
        viewer: Viewer to use (default: a new one).

    Returns:
        ``(viewer, widget)``; run the event loop with ``napari.run()``.

    Raises:
        InputError: Unreadable image or labels, or labels on another grid.
    """
    volume = read_volume(image)
    label_volume = None
    empty: list[int] = []
    if labels is None:
        labels = find_autosave(image)
        if labels is not None:
            log.info("restoring the autosaved painted slices %s (--labels to open another)",
                     labels)
            empty = autosaved_empty_slices(image)
    elif empty_slices_file(labels).is_file():  # its slices annotated empty
        empty = read_empty_slices(empty_slices_file(labels))
    if labels is not None:
        label_volume = read_label(labels)
        if not label_volume.same_geometry(volume):
            raise InputError("labels lie on another grid than the image (shape, spacing, "
                             "origin or direction)", labels)
    import napari

    from sparseseg.napari.widget import AnnotationWidget

    if viewer is None:
        viewer = napari.Viewer(title=f"sparseseg: {Path(image).name}")
    data, kwargs, _ = image_layer_data(volume)
    viewer.add_image(data, **kwargs)
    if label_volume is not None:
        label_volume.path = None  # the layer is a new annotation, saved where the user says
        data, kwargs, _ = labels_layer_data(label_volume, name=f"{layer_name(volume)} labels")
        viewer.add_labels(data, **kwargs)
    widget = AnnotationWidget(viewer, model=model, method=method, output=output, device=device,
                              hybrid_weight=hybrid_weight, refiner=refiner)
    viewer.window.add_dock_widget(widget, name="OneSeg annotation", area="right")
    for k in empty:  # slices painted empty: a label file cannot hold them
        if 0 <= k < volume.shape[SLICE_AXIS]:
            widget.mark_empty(index=k)
    if viewer.dims.ndim == 3:
        viewer.dims.axis_labels = ("slice k", "j", "i")
    viewer.dims.set_current_step(SLIDER_AXIS, volume.shape[SLICE_AXIS] // 2)
    return viewer, widget
