"""The annotation dock widget: suggest a slice, propagate the painted ones, save.

The annotator picks a model folder (or none: the training-free ``registration`` method), the
image layer and the labels layer, paints one or more slices, and clicks **Propagate**: the
painted slices go through the volume, all labels at once, and fill every slice she did not
paint. Painted slices are never overwritten; a propagated slice she corrects becomes a
painted one, so the next **Propagate** starts from it too. **Suggest slice** moves the
viewer to the slice to paint next. With **adapt the model to my slices** ticked, OneSeg's
model is first tuned to the painted slices (guided test-time adaptation, 1-5 s). With **use
the image's intensities** ticked (the default), the final labels also weigh each label's
intensities inside and around its painted outlines (:mod:`sparseseg.oneseg.intensity`). With
**suggest: cross-check with registration** ticked, **Suggest slice** also weighs where a
registration of the painted slices disagrees (``oneseg suggest --cross-check``). With
the ``hybrid`` method, **OneSeg share** sets OneSeg's part of each step's mix (the rest is
registration's, :mod:`sparseseg.oneseg.hybrid`). **Save**
writes the labels as NIfTI in the image's geometry, atomically. Work runs in a worker thread
(the viewer stays responsive, the buttons wait); errors show in the widget, never as a
traceback. The painted slices are autosaved (:mod:`sparseseg.napari.autosave`) a moment after
each stroke.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sparseseg.errors import InputError, SparsesegError
from sparseseg.io.reader import read_label
from sparseseg.io.volume import Volume
from sparseseg.napari import tasks
from sparseseg.napari.autosave import autosaved_empty_slices, find_autosave, write_autosave
from sparseseg.napari.layers import (
    GEOMETRY_KEY,
    SLIDER_AXIS,
    from_display,
    layer_geometry,
    layer_source,
    layer_volume,
    to_display,
)
from sparseseg.napari.painting import PaintedSlices, keep_painted, labeled_slices

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

METHODS = ("oneseg", "hybrid", "registration", "copy", "interpolation")
"""Propagation methods offered (see :func:`sparseseg.oneseg.propagate`; **Suggest slice**
needs one of the first four, which propagate slice by slice)."""

INTENSITY_METHODS = ("oneseg", "hybrid", "registration")
"""Methods whose labels the intensity decision refines."""

CROSS_CHECK_METHODS = ("oneseg", "hybrid", "copy")
"""Methods whose suggestion can be cross-checked by registration (a propagating method other
than registration itself)."""

AUTOSAVE_DELAY = 2.0
"""Seconds after the last stroke before the painted slices are autosaved."""


def default_model() -> Path | None:
    """The model sparseseg ships, when this version has one and it is on disk."""
    from sparseseg import oneseg

    finder = getattr(oneseg, "default_model_path", None)
    if finder is None:
        return None
    try:
        path = finder()
    except SparsesegError:
        return None
    return Path(path) if path is not None and (Path(path) / "model.safetensors").is_file() else None


class AnnotationWidget(QWidget):
    """Dock widget driving OneSeg from a napari viewer.

    Args:
        napari_viewer: The viewer (napari passes it).
        model: Model folder; default: the model shipped with sparseseg when there is one.
            Without a model the method is ``registration``.
        method: ``oneseg``, ``hybrid``, ``registration``, ``copy`` or ``interpolation``
            (default: ``oneseg`` with a model).
        output: Where **Save** writes (default: asked in a file dialog).
        device: Where to compute (``auto``, ``cpu``, ``cuda``...).
        hybrid_weight: OneSeg's share of ``hybrid``'s mix, in ``[0, 1]`` (default
            :data:`sparseseg.napari.tasks.HYBRID_WEIGHT`).
        autosave_delay: Seconds after the last stroke before autosaving (``None``: never).
        refiner: Refinement network folder (``sparseseg oneseg refine --save-model``):
            **Propagate** refines with it and **Suggest slice** asks it (default: none).
    """

    progressed = Signal(int, int)
    """``(done, total)`` slices, emitted from the worker thread."""

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        model: str | Path | None = None,
        method: str | None = None,
        output: str | Path | None = None,
        device: str = "auto",
        hybrid_weight: float | None = None,
        autosave_delay: float | None = AUTOSAVE_DELAY,
        refiner: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.device = device
        self._trackers: dict[Hashable, PaintedSlices] = {}  # per labels layer
        self._tracked = None  # labels layer whose paint events are connected
        self._worker = None
        self._autosave_worker = None
        self._started = 0.0
        self.last_autosave: Path | None = None

        model = model if model is not None else default_model()
        self.model_edit = QLineEdit("" if model is None else str(model))
        self.model_edit.setPlaceholderText("none: training-free registration")
        self.model_edit.setToolTip("OneSeg model folder (config.json + model.safetensors)")
        model_browse = QPushButton("...")
        model_browse.setToolTip("choose a model folder")
        model_browse.clicked.connect(self._browse_model)
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.method_combo.setCurrentText(method or ("oneseg" if model else "registration"))
        self.model_edit.textChanged.connect(self._model_changed)
        self.adapt_check = QCheckBox("adapt the model to my slices")
        self.adapt_check.setToolTip(
            "oneseg and hybrid only: before propagating, tune a copy of the model so that the "
            "painted labels survive a copy to neighbouring slices and back (1-5 s; on "
            "abdominal MR +0.02 Dice with the image's intensities, +0.13 without; on CT it "
            "loses 0.02)"
        )
        self._enable_for(self.adapt_check, tasks.MODEL_METHODS)
        self.intensity_check = QCheckBox("use the image's intensities")
        self.intensity_check.setChecked(True)
        self.intensity_check.setToolTip(
            "the final labels also weigh each label's intensities inside and around its "
            "painted outlines (on abdominal MR and cardiac cine MRI +0.15-0.2 Dice from one "
            "slice); untick for the propagation's labels alone. Not used by copy and "
            "interpolation"
        )
        self._enable_for(self.intensity_check, INTENSITY_METHODS)
        self.cross_check_box = QCheckBox("suggest: cross-check with registration")
        self.cross_check_box.setToolTip(
            "from the second painted slice on, Suggest slice also propagates by registration "
            "and counts where the two disagree as doubt: it finds where the label is dropped "
            "while the structure goes on (LeftAtrium, 3rd slice: 0.881 Dice against 0.877; "
            "about 20 s more on an 88-slice volume)"
        )
        self._enable_for(self.cross_check_box, CROSS_CHECK_METHODS)
        if hybrid_weight is not None and not 0.0 <= hybrid_weight <= 1.0:  # nan too
            raise InputError(f"the hybrid's OneSeg share must lie in [0, 1], got {hybrid_weight}")
        self.hybrid_spin = QDoubleSpinBox()
        self.hybrid_spin.setRange(0.0, 1.0)
        self.hybrid_spin.setSingleStep(0.1)
        self.hybrid_spin.setDecimals(2)
        self.hybrid_spin.setValue(tasks.HYBRID_WEIGHT if hybrid_weight is None
                                  else hybrid_weight)
        self.hybrid_spin.setToolTip(
            "hybrid only: OneSeg's share of each step's mix, the rest is registration's "
            "(0.7 is best on abdominal CT and MR; lower it for thick slices such as cardiac "
            "short-axis stacks, where 0 = registration alone scores best)"
        )
        self.method_combo.currentTextChanged.connect(
            lambda m: self.hybrid_spin.setEnabled(m == "hybrid"))
        self.hybrid_spin.setEnabled(self.method == "hybrid")
        self.refiner_edit = QLineEdit("" if refiner is None else str(refiner))
        self.refiner_edit.setPlaceholderText("none")
        self.refiner_edit.setToolTip(
            "a network saved by 'sparseseg oneseg refine --save-model' on this dataset: "
            "Propagate then refines the labels with it (a few seconds) and Suggest asks it "
            "which slice it doubts most"
        )
        refiner_browse = QPushButton("...")
        refiner_browse.setToolTip("choose a refinement network folder")
        refiner_browse.clicked.connect(self._browse_refiner)
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        new_labels = QPushButton("new")
        new_labels.setToolTip("add an empty labels layer on the image's grid")
        new_labels.clicked.connect(lambda: self.new_labels_layer())
        self.output_edit = QLineEdit("" if output is None else str(output))
        self.output_edit.setPlaceholderText("asked on Save")
        output_browse = QPushButton("...")
        output_browse.clicked.connect(self._browse_output)

        self.suggest_button = QPushButton("Suggest slice")
        self.suggest_button.setToolTip(
            "move to the slice to paint next: the model's choice when nothing is painted, "
            "else the slice the propagation is least sure of"
        )
        self.propagate_button = QPushButton("Propagate")
        self.propagate_button.setToolTip(
            "propagate every painted slice through the volume, all labels at once; painted "
            "slices stay as they are"
        )
        self.empty_button = QPushButton("Empty slice")
        self.empty_button.setToolTip(
            "erase the slice shown and count it as painted: the structures are not there, "
            "every label stops at it (e.g. the first slice past an organ's end, or of a leak)"
        )
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("write the labels as NIfTI in the image's geometry")
        self.restore_button = QPushButton("Restore autosave")
        self.restore_button.setToolTip("load the autosaved painted slices of this image")
        self.suggest_button.clicked.connect(self.suggest)
        self.propagate_button.clicked.connect(self.propagate)
        self.save_button.clicked.connect(lambda: self.save())
        self.restore_button.clicked.connect(self.restore_autosave)
        self.empty_button.clicked.connect(lambda: self.mark_empty())
        self._buttons = (self.suggest_button, self.propagate_button, self.save_button,
                         self.restore_button, self.empty_button)

        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.status_label = QLabel("paint a slice, then Propagate")
        self.status_label.setWordWrap(True)
        self.painted_label = QLabel("")
        self.painted_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("model", _row(self.model_edit, model_browse))
        form.addRow("method", self.method_combo)
        form.addRow("OneSeg share", self.hybrid_spin)
        form.addRow("", self.adapt_check)
        form.addRow("", self.intensity_check)
        form.addRow("", self.cross_check_box)
        form.addRow("refiner", _row(self.refiner_edit, refiner_browse))
        form.addRow("image", self.image_combo)
        form.addRow("labels", _row(self.labels_combo, new_labels))
        form.addRow("save to", _row(self.output_edit, output_browse))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        for button in self._buttons[:3]:
            buttons.addWidget(button)
        layout.addLayout(buttons)
        extra = QHBoxLayout()
        extra.addWidget(self.empty_button)
        extra.addWidget(self.restore_button)
        layout.addLayout(extra)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.painted_label)
        layout.addStretch(1)

        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_delay = autosave_delay
        if autosave_delay is not None:
            self._autosave_timer.setInterval(int(autosave_delay * 1000))
        self._autosave_timer.timeout.connect(self.autosave)
        self.progressed.connect(self._on_progress)
        self.labels_combo.currentTextChanged.connect(lambda _: self._track_labels())
        self.image_combo.currentTextChanged.connect(lambda _: self._update_restore())
        self.viewer.layers.events.inserted.connect(self.reset_choices)
        self.viewer.layers.events.removed.connect(self.reset_choices)
        self.reset_choices()
        if self.image_layer is not None and self.labels_layer is None:
            self.new_labels_layer()

    # --- layers -----------------------------------------------------------------------

    @property
    def image_layer(self) -> napari.layers.Image | None:
        """The chosen image layer."""
        return self._layer(self.image_combo.currentText())

    @property
    def labels_layer(self) -> napari.layers.Labels | None:
        """The chosen labels layer."""
        return self._layer(self.labels_combo.currentText())

    @property
    def painted_slices(self) -> list[int]:
        """The slices painted in the chosen labels layer, sorted."""
        tracker = self._tracker()
        return [] if tracker is None else sorted(tracker.slices)

    @property
    def busy(self) -> bool:
        """Whether a task is running."""
        return self._worker is not None

    @property
    def status(self) -> str:
        """The status line's text."""
        return self.status_label.text()

    def reset_choices(self, *_: Any) -> None:
        """Refill the layer choices from the viewer (napari calls this on layer changes)."""
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        present = {_layer_key(layer) for layer in self.viewer.layers}
        for key in set(self._trackers) - present:
            del self._trackers[key]
        self._track_labels()
        self._update_restore()

    def new_labels_layer(self, data: np.ndarray | None = None) -> napari.layers.Labels:
        """Add a labels layer on the chosen image's grid and choose it.

        Args:
            data: Its data in layer order (default: empty).

        Raises:
            InputError: No image layer.
        """
        image = self._require_image()
        if data is None:
            data = np.zeros(image.data.shape, np.uint8)
        metadata = {GEOMETRY_KEY: {**image.metadata.get(GEOMETRY_KEY, {}), "path": None}}
        if not image.metadata.get(GEOMETRY_KEY):
            metadata = {}
        layer = self.viewer.add_labels(
            data, name=f"{image.name} labels", scale=tuple(image.scale),
            translate=tuple(image.translate), metadata=metadata,
        )
        self.reset_choices()
        self.labels_combo.setCurrentText(layer.name)
        return layer

    # --- actions ----------------------------------------------------------------------

    def suggest(self) -> None:
        """Find the slice to paint next in a worker; move the viewer there when found."""
        with self._reporting():
            image, labels, tracker = self._inputs()
            annotation = tracker.annotation(labels.data)
            self._run(
                tasks.suggest_slice,
                dict(image=image, annotation=annotation, model=self.model,
                     method=self.method, device=self.device, progress=self.progressed.emit,
                     painted=sorted(tracker.slices), adapt=self.adapt,
                     intensity_weight=self.intensity_weight,
                     hybrid_weight=self.hybrid_weight, refiner=self.refiner,
                     cross_check=self.cross_check),
                self._suggested,
                "finding the slice to paint",
            )

    def propagate(self) -> None:
        """Propagate the painted slices in a worker; fill the other slices when done."""
        with self._reporting():
            image, labels, tracker = self._inputs()
            annotation = tracker.annotation(labels.data)
            if not labeled_slices(annotation):
                raise InputError("nothing painted yet: paint the structures on one slice")
            self._run(
                tasks.propagate_labels,
                dict(image=image, annotation=annotation, model=self.model,
                     method=self.method, device=self.device, progress=self.progressed.emit,
                     painted=sorted(tracker.slices), adapt=self.adapt,
                     intensity_weight=self.intensity_weight,
                     hybrid_weight=self.hybrid_weight, refiner=self.refiner),
                functools.partial(self._propagated, how=self._how()),
                f"propagating {self.method} from slice(s) "
                f"{_ranges(labeled_slices(annotation))}",
            )

    def mark_empty(self, index: int | None = None) -> int | None:
        """Erase a slice and count it as painted: no structure there, every label stops at
        it (as ``oneseg propagate --empty-slice``). The next **Propagate** keeps the labels
        up to it and none from it on.

        Args:
            index: The slice (layer order); default: the one the viewer shows.

        Returns:
            The slice marked, or ``None`` when nothing could be (the reason in the status).
        """
        with self._reporting():
            if self.busy:
                raise InputError("busy: wait for the running task")
            self._require_image()
            labels = self.labels_layer or self.new_labels_layer()
            n = labels.data.shape[SLIDER_AXIS]
            k = int(self.viewer.dims.current_step[SLIDER_AXIS] if index is None else index)
            if not 0 <= k < n:
                raise InputError(f"slice {k} is outside the volume (0..{n - 1})")
            tracker = self._tracker(labels)
            tracker.update(labels.data)  # strokes made so far stay painted
            data = np.array(labels.data, copy=True)
            np.moveaxis(data, SLIDER_AXIS, 0)[k] = 0
            self._replace(labels, data, painted=tracker.slices | {k})
            self._set_status(f"slice {k} marked empty: every label stops there")
            if self._autosave_delay is not None:
                self._autosave_timer.start()
            return k
        return None

    def save(self, path: str | Path | None = None) -> None:
        """Write the labels layer as NIfTI in the image's geometry (in a worker).

        Args:
            path: Output file; default: the "save to" field, else asked in a file dialog.
        """
        with self._reporting():
            image, labels, tracker = self._inputs()
            if path is None:
                path = self.output_edit.text().strip() or self._ask_output()
                if not path:
                    return
            self.output_edit.setText(str(path))
            data = np.array(labels.data, copy=True)
            self._run(tasks.save_labels, dict(path=path, data=data, reference=image),
                      self._saved, f"saving {path}")

    def autosave(self) -> Path | None:
        """Write the painted slices to the image's autosave file now (in a worker)."""
        self._autosave_timer.stop()
        image_layer, labels = self.image_layer, self.labels_layer
        tracker = self._tracker()
        source = None if image_layer is None else layer_source(image_layer.metadata)
        if source is None or labels is None or tracker is None:
            return None
        if labels.data.shape != image_layer.data.shape:
            return None
        tracker.update(labels.data)
        empty = tracker.empty(labels.data)
        annotation = from_display(tracker.annotation(labels.data))
        spacing, origin, direction, _ = layer_geometry(image_layer.scale, image_layer.metadata)
        reference = Volume(annotation, spacing, origin, direction)
        from napari.qt.threading import create_worker

        worker = create_worker(write_autosave, source, annotation, reference, empty,
                               _ignore_errors=True)
        worker.returned.connect(self._autosaved)
        worker.errored.connect(lambda exc: self._show_error(exc, prefix="autosave failed: "))
        worker.finished.connect(lambda: setattr(self, "_autosave_worker", None))
        self._autosave_worker = worker
        worker.start()
        return None

    def restore_autosave(self) -> None:
        """Load the autosaved painted slices of the chosen image into the labels layer."""
        with self._reporting():
            image_layer = self._require_image()
            source = layer_source(image_layer.metadata)
            path = None if source is None else find_autosave(source)
            if path is None:
                raise InputError("no autosave for this image")
            data = to_display(read_label(path).array)
            if data.shape != image_layer.data.shape:
                raise InputError("autosave's shape differs from the image's", path)
            labels = self.labels_layer or self.new_labels_layer()
            empty = [k for k in autosaved_empty_slices(source) if 0 <= k < data.shape[0]]
            self._replace(labels, data.astype(labels.data.dtype, copy=False),
                          painted=set(labeled_slices(data)) | set(empty))
            self._set_status(f"restored the painted slices from {path}")

    # --- model and method ---------------------------------------------------------------

    @property
    def model(self) -> Path | None:
        """The chosen model folder (``None`` when the field is empty)."""
        return _folder_in(self.model_edit)

    @property
    def refiner(self) -> Path | None:
        """The chosen refinement network folder (``None`` when the field is empty)."""
        return _folder_in(self.refiner_edit)

    @property
    def method(self) -> str:
        """The chosen propagation method."""
        return self.method_combo.currentText()

    @property
    def adapt(self) -> bool:
        """Whether OneSeg's model is first adapted to the painted slices."""
        return self.adapt_check.isChecked() and self.method in tasks.MODEL_METHODS

    @property
    def cross_check(self) -> str | None:
        """``registration`` when **Suggest slice** cross-checks the propagation with it."""
        checked = self.cross_check_box.isChecked() and self.method in CROSS_CHECK_METHODS
        return "registration" if checked else None

    @property
    def hybrid_weight(self) -> float:
        """OneSeg's share of the ``hybrid`` method's mix."""
        return float(self.hybrid_spin.value())

    @property
    def intensity_weight(self) -> float | None:
        """The intensity weight of the label decision (``None``: sparseseg's default; ``0``:
        the propagation's labels alone)."""
        return None if self.intensity_check.isChecked() else 0.0

    def _enable_for(self, box: QCheckBox, methods: tuple[str, ...]) -> None:
        """Keep ``box`` enabled only while the chosen method is one of ``methods``."""
        self.method_combo.currentTextChanged.connect(lambda m: box.setEnabled(m in methods))
        box.setEnabled(self.method in methods)

    def _model_changed(self, text: str) -> None:
        if not text.strip() and self.method in tasks.MODEL_METHODS:
            self.method_combo.setCurrentText("registration")
        elif text.strip() and self.method == "registration":
            self.method_combo.setCurrentText("oneseg")

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "OneSeg model folder")
        if folder:
            self.model_edit.setText(folder)

    def _browse_refiner(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Refinement network folder")
        if folder:
            self.refiner_edit.setText(folder)

    def _browse_output(self) -> None:
        path = self._ask_output()
        if path:
            self.output_edit.setText(path)

    def _ask_output(self) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save labels", self._default_output(), "NIfTI (*.nii.gz *.nii)"
        )
        return path

    def _default_output(self) -> str:
        image = self.image_layer
        source = None if image is None else layer_source(image.metadata)
        if source is None:
            return "labels.nii.gz"
        from sparseseg.io.formats import case_name

        return str(source.parent / f"{case_name(source)}_labels.nii.gz")

    # --- internals --------------------------------------------------------------------

    def _layer(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _require_image(self):
        image = self.image_layer
        if image is None:
            raise InputError("no image layer: open a volume first")
        if image.data.ndim != 3:
            raise InputError(f"image layer {image.name!r} is not 3D")
        return image

    def _inputs(self):
        if self.busy:
            raise InputError("busy: wait for the running task")
        image_layer = self._require_image()
        labels = self.labels_layer or self.new_labels_layer()
        if labels.data.shape != image_layer.data.shape:
            raise InputError(
                f"labels layer {labels.name!r} has shape {labels.data.shape}, image "
                f"{image_layer.name!r} {image_layer.data.shape}"
            )
        image = layer_volume(image_layer.data, image_layer.scale, image_layer.metadata)
        if labels.metadata.get(GEOMETRY_KEY):
            spacing, origin, direction, _ = layer_geometry(labels.scale, labels.metadata)
            if not (np.allclose(spacing, image.spacing, atol=1e-3)
                    and np.allclose(origin, image.origin, atol=1e-3)
                    and np.allclose(direction, image.direction, atol=1e-3)):
                raise InputError(f"labels layer {labels.name!r} lies on another grid than "
                                 f"image {image_layer.name!r} (spacing/origin/direction)")
        tracker = self._tracker(labels)
        tracker.update(labels.data)
        return image, labels, tracker

    def _tracker(self, labels=None) -> PaintedSlices | None:
        labels = labels or self.labels_layer
        if labels is None:
            return None
        key = _layer_key(labels)
        if key not in self._trackers:
            self._trackers[key] = PaintedSlices(labels.data, labeled_slices(labels.data))
        return self._trackers[key]

    def _track_labels(self) -> None:
        labels = self.labels_layer
        if _layer_key(labels) == _layer_key(self._tracked):
            return
        if self._tracked is not None:
            self._tracked.events.paint.disconnect(self._on_paint)
        self._tracked = labels
        if labels is not None:
            labels.events.paint.connect(self._on_paint)
            self._tracker(labels)
        self._show_painted()

    def _on_paint(self, _event: Any = None) -> None:
        # napari may announce an edit before writing it (``data_setitem``): look once the
        # event loop is back.
        QTimer.singleShot(0, self._count_painting)

    def _count_painting(self) -> None:
        labels, tracker = self.labels_layer, self._tracker()
        if labels is None or tracker is None:
            return
        tracker.update(labels.data)
        self._show_painted()
        if self._autosave_delay is not None:
            self._autosave_timer.start()

    def _show_painted(self) -> None:
        painted = self.painted_slices
        self.painted_label.setText(
            f"painted slices: {_ranges(painted)}" if painted else "painted slices: none"
        )

    def _update_restore(self) -> None:
        image = self.image_layer
        source = None if image is None else layer_source(image.metadata)
        self.restore_button.setEnabled(
            not self.busy and source is not None and find_autosave(source) is not None
        )

    def _replace(self, labels, data: np.ndarray, *, painted=None) -> None:
        """Put ``data`` in the labels layer; count ``painted`` (default: unchanged) as painted."""
        if isinstance(labels.data, np.ndarray) and labels.data.flags.writeable:
            np.copyto(labels.data, data, casting="unsafe")
            labels.refresh()
        else:
            labels.data = data
        tracker = self._tracker(labels)
        if painted is None:
            tracker.accept(labels.data)
        else:
            tracker.reset(labels.data, painted)
        self._show_painted()

    def _run(self, func: Callable, kwargs: dict, done: Callable, what: str) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(func, **kwargs, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(self._show_error)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._started = time.perf_counter()
        for button in self._buttons:
            button.setEnabled(False)
        self.progress_bar.setRange(0, 0)  # busy until the first slice reports
        self.progress_bar.setVisible(True)
        self._set_status(what + "...")
        log.info("%s", what)
        worker.start()

    def _finished(self) -> None:
        self._worker = None
        for button in self._buttons:
            button.setEnabled(True)
        self._update_restore()
        self.progress_bar.setVisible(False)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(int(total), 1))
        self.progress_bar.setValue(int(done))

    def _how(self) -> str:
        """The settings a run starts with, for its status line (read when it starts: they
        may change while it runs)."""
        share = (f", OneSeg share {self.hybrid_weight:g}"
                 if self.method == "hybrid" and self.hybrid_weight != tasks.HYBRID_WEIGHT
                 else "")
        return (f"{self.method}{share}{', adapted' if self.adapt else ''}"
                f"{', intensities off' if self.intensity_weight == 0 else ''}"
                f"{', refined' if self.refiner is not None else ''}")

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self._started:.1f} s"

    def _propagated(self, result: np.ndarray, how: str) -> None:
        labels, tracker = self.labels_layer, self._tracker()
        if labels is None or tracker is None or labels.data.shape != result.shape:
            self._set_status("labels layer changed while propagating; result dropped", error=True)
            return
        tracker.update(labels.data)  # strokes made while the worker ran stay painted
        self._replace(labels, keep_painted(result, labels.data, tracker.slices))
        filled = len(labeled_slices(labels.data))
        empty = tracker.empty(labels.data)
        self._set_status(
            f"propagated ({how}) from slice(s) {_ranges(sorted(tracker.slices - set(empty)))}"
            f"{f' (empty: {_ranges(empty)})' if empty else ''} in "
            f"{self._elapsed()}: {filled} labeled slices; correct any slice and Propagate again"
        )

    def _suggested(self, found: tasks.SliceSuggestion) -> None:
        labels, tracker = self.labels_layer, self._tracker()
        if found.labels is not None and labels is not None and tracker is not None \
                and labels.data.shape == found.labels.shape:
            tracker.update(labels.data)
            self._replace(labels, keep_painted(found.labels, labels.data, tracker.slices))
        self.viewer.dims.set_current_step(SLIDER_AXIS, int(found.slice))
        reason = {
            "select": "the model's choice to annotate first",
            "middle": "the middle of the slices holding structure (no model)",
            "suggest": "the propagation is least sure here",
            "refined": "the refinement network is least sure here",
            "cross-checked": "the propagation is least sure or registration disagrees here",
        }[found.how]
        extra = ""
        if found.confidence is not None and 0 <= found.slice < len(found.confidence):
            extra = f", confidence {float(found.confidence[found.slice]):.2f}"
        self._set_status(f"slice {found.slice}: {reason}{extra}; paint it")

    def _saved(self, path: Path) -> None:
        self._set_status(f"saved {path}")
        log.info("labels saved to %s", path)

    def _autosaved(self, path: Path) -> None:
        self.last_autosave = path
        self._update_restore()
        log.info("painted slices autosaved to %s", path)

    def _show_error(self, exc: BaseException, *, prefix: str = "") -> None:
        if isinstance(exc, SparsesegError):
            text = f"{prefix}{exc}"
            log.warning("%s", text)
        else:
            text = f"{prefix}{type(exc).__name__}: {exc}"
            log.error("%s", text, exc_info=exc)
        self._set_status(text, error=True)

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #e05555;" if error else "")

    @contextlib.contextmanager
    def _reporting(self) -> Iterator[None]:
        """Show a :class:`SparsesegError` raised in the block in the widget, not raise it."""
        try:
            yield
        except SparsesegError as exc:
            self._show_error(exc)


def _layer_key(layer: Any) -> Hashable:
    """A layer's identity, the same through napari's plugin proxies (``None`` for none)."""
    if layer is None:
        return None
    return getattr(layer, "unique_id", None) or id(getattr(layer, "__wrapped__", layer))


def _folder_in(edit: QLineEdit) -> Path | None:
    """The folder typed in ``edit`` (``None`` when it is empty)."""
    text = edit.text().strip()
    return Path(text).expanduser() if text else None


def _row(*widgets: QWidget) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if isinstance(widget, (QLineEdit, QComboBox)) else 0)
    return row


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"
