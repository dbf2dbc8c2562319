"""The annotation widget in a real headless viewer: paint, suggest, propagate, save, reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402

from sparseseg import oneseg  # noqa: E402
from sparseseg.errors import InputError  # noqa: E402
from sparseseg.io.reader import read_label, read_volume  # noqa: E402
from sparseseg.io.volume import Volume  # noqa: E402
from sparseseg.napari.autosave import find_autosave  # noqa: E402
from sparseseg.napari.layers import SLIDER_AXIS, from_display, to_display  # noqa: E402
from sparseseg.napari.painting import labeled_slices  # noqa: E402
from sparseseg.napari.reader import read_layers  # noqa: E402
from sparseseg.napari.session import open_viewer  # noqa: E402
from sparseseg.napari.tasks import middle_slice  # noqa: E402
from sparseseg.napari.widget import AnnotationWidget  # noqa: E402

WAIT_MS = 60_000


def _open(make_napari_viewer, image_file: Path, **kwargs) -> tuple[object, AnnotationWidget]:
    viewer = make_napari_viewer()
    data, layer_kwargs, _ = read_layers(str(image_file))[0]
    viewer.add_image(data, **layer_kwargs)
    widget = AnnotationWidget(viewer, **{"autosave_delay": None, **kwargs})
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _paint(qtbot, widget: AnnotationWidget, k: int, truth: np.ndarray) -> None:
    """Paint the true labels of slice ``k`` (layer order) through napari's editing API."""
    rows, cols = np.nonzero(truth[k] != widget.labels_layer.data[k])
    widget.labels_layer.data_setitem((np.full(rows.size, k), rows, cols), truth[k][rows, cols])
    qtbot.waitUntil(lambda: k in widget.painted_slices, timeout=WAIT_MS)


def _paint_largest(qtbot, widget: AnnotationWidget, label_file: Path) -> tuple[np.ndarray, int]:
    """Paint the true labels of the slice of largest label area; the truth (layer order) and
    that slice."""
    truth = to_display(read_label(label_file).array)
    k = _largest_slice(truth)
    _paint(qtbot, widget, k, truth)
    return truth, k


def _click(qtbot, widget: AnnotationWidget, button) -> None:
    qtbot.mouseClick(button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)


def _largest_slice(truth: np.ndarray) -> int:
    return int(np.argmax((truth > 0).reshape(truth.shape[0], -1).sum(1)))


def test_paint_propagate_save_reload(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    labels = widget.labels_layer
    assert labels is not None and labels.data.shape == (16, 36, 40)
    assert tuple(labels.scale) == tuple(widget.image_layer.scale) == (3.0, 1.25, 1.5)
    # No model given: the one shipped with sparseseg, and OneSeg.
    assert widget.model == oneseg.default_model_path() and widget.method == "oneseg"
    truth, k = _paint_largest(qtbot, widget, label_file)
    assert widget.painted_slices == [k]

    seen: list[tuple[int, int]] = []
    widget.progressed.connect(lambda done, total: seen.append((done, total)))
    _click(qtbot, widget, widget.propagate_button)
    assert "propagated" in widget.status, widget.status
    assert seen and all(0 <= done <= total for done, total in seen)
    assert np.array_equal(labels.data[k], truth[k])  # the painted slice is kept exactly
    filled = labeled_slices(labels.data)
    assert len(filled) >= 8 and k in filled
    for value in (1, 2, 3, 4):
        assert value in labels.data[k + 1] or value not in truth[k]  # all labels at once
    assert widget.painted_slices == [k]  # propagated slices are not painted ones

    output = tmp_path / "out" / "case_labels.nii.gz"
    output.parent.mkdir()
    widget.output_edit.setText(str(output))
    _click(qtbot, widget, widget.save_button)
    assert widget.status == f"saved {output}"
    saved = read_label(output)
    image = read_volume(image_file)
    assert np.array_equal(saved.array, from_display(labels.data))
    assert saved.same_geometry(image, tolerance=1e-6)
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temporary


def test_adapt_to_the_painted_slices(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    truth, k = _paint_largest(qtbot, widget, label_file)
    _click(qtbot, widget, widget.propagate_button)
    plain = widget.labels_layer.data.copy()
    assert widget.adapt_check.isEnabled() and not widget.adapt
    widget.adapt_check.setChecked(True)
    assert widget.adapt
    _click(qtbot, widget, widget.propagate_button)
    assert "propagated (oneseg, adapted)" in widget.status, widget.status
    adapted = widget.labels_layer.data
    assert np.array_equal(adapted[k], truth[k])  # the painted slice is kept exactly
    assert len(labeled_slices(adapted)) >= 8
    assert not np.array_equal(adapted, plain)  # another model propagated
    viewer.dims.set_point(SLIDER_AXIS, k + 2)
    viewer.screenshot(str(tmp_path / "adapted.png"), canvas_only=False)
    # The training-free methods have no model to adapt.
    widget.method_combo.setCurrentText("registration")
    assert not widget.adapt_check.isEnabled() and not widget.adapt


def test_the_intensity_switch_reaches_the_propagation(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from sparseseg.napari.tasks import propagate_labels

    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    truth, k = _paint_largest(qtbot, widget, label_file)
    assert widget.intensity_check.isChecked() and widget.intensity_weight is None
    _click(qtbot, widget, widget.propagate_button)
    with_intensities = widget.labels_layer.data.copy()
    widget.intensity_check.setChecked(False)
    assert widget.intensity_weight == 0
    _click(qtbot, widget, widget.propagate_button)
    assert "propagated (oneseg, intensities off)" in widget.status, widget.status
    without = widget.labels_layer.data.copy()
    assert np.array_equal(with_intensities[k], truth[k]) and np.array_equal(without[k], truth[k])
    image = read_volume(image_file)
    annotation = np.zeros_like(truth)
    annotation[k] = truth[k]
    for weight, got in ((None, with_intensities), (0.0, without)):
        want = propagate_labels(image=image, annotation=annotation, model=widget.model,
                                method="oneseg", painted=[k], intensity_weight=weight)
        want[k] = truth[k]
        assert np.array_equal(got, want), weight
    assert not np.array_equal(with_intensities, without)
    viewer.dims.set_point(SLIDER_AXIS, k + 2)
    viewer.screenshot(str(tmp_path / "intensity.png"), canvas_only=False)
    for method, enabled in (("copy", False), ("interpolation", False), ("registration", True)):
        widget.method_combo.setCurrentText(method)
        assert widget.intensity_check.isEnabled() == enabled, method
    # The widget's list (a copy: no torch at import) is the core's propagators that decide
    # with intensities.
    from sparseseg.napari.widget import INTENSITY_METHODS
    from sparseseg.oneseg.baselines import PROPAGATORS, baseline_propagator
    from sparseseg.oneseg.hybrid import HybridPropagator
    from sparseseg.oneseg.propagation import OneSegPropagator

    decides = {m: baseline_propagator(m, image.array).intensity_decision
               for m in ("registration", "copy")}
    decides |= {"oneseg": OneSegPropagator.intensity_decision,
                "hybrid": HybridPropagator.intensity_decision}
    assert tuple(m for m in PROPAGATORS if decides[m]) == INTENSITY_METHODS


def test_hybrid_method_in_the_widget(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from sparseseg.napari.tasks import HYBRID_WEIGHT, propagate_labels
    from sparseseg.napari.widget import METHODS
    from sparseseg.oneseg.baselines import METHODS as CORE_METHODS
    from sparseseg.oneseg.hybrid import HYBRID_WEIGHT as CORE_HYBRID_WEIGHT

    # The widget and its tasks keep their own copies (no torch at import).
    assert METHODS == CORE_METHODS and HYBRID_WEIGHT == CORE_HYBRID_WEIGHT
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    truth, k = _paint_largest(qtbot, widget, label_file)
    assert not widget.hybrid_spin.isEnabled()  # oneseg: no mix to weigh
    assert widget.hybrid_weight == HYBRID_WEIGHT
    widget.method_combo.setCurrentText("hybrid")
    assert widget.adapt_check.isEnabled() and widget.intensity_check.isEnabled()
    assert widget.hybrid_spin.isEnabled()
    widget.hybrid_spin.setValue(0.3)  # the annotator gives registration the larger share
    qtbot.mouseClick(widget.propagate_button, Qt.LeftButton)
    widget.hybrid_spin.setValue(0.5)  # changed while it runs: the run keeps 0.3
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "propagated (hybrid, OneSeg share 0.3)" in widget.status, widget.status
    widget.hybrid_spin.setValue(0.3)
    annotation = np.zeros_like(truth)
    annotation[k] = truth[k]
    image = read_volume(image_file)
    want = propagate_labels(image=image, annotation=annotation, model=widget.model,
                            method="hybrid", painted=[k], hybrid_weight=0.3)
    want[k] = truth[k]
    assert np.array_equal(widget.labels_layer.data, want)
    # The share reaches the propagation: the default share gives other labels here.
    default = propagate_labels(image=image, annotation=annotation, model=widget.model,
                               method="hybrid", painted=[k])
    default[k] = truth[k]
    assert not np.array_equal(default, want)
    viewer.dims.set_point(SLIDER_AXIS, k + 2)
    viewer.screenshot(str(tmp_path / "hybrid.png"), canvas_only=False)
    # The share can be given when the widget opens (sparseseg view --hybrid-weight).
    _, opened = open_viewer(image_file, method="hybrid", hybrid_weight=0.4,
                            viewer=make_napari_viewer())
    assert opened.hybrid_weight == 0.4 and opened.hybrid_spin.isEnabled()
    with pytest.raises(InputError, match="OneSeg share"):
        AnnotationWidget(viewer, hybrid_weight=1.5)
    # Without a model the hybrid has nothing to mix: the widget falls back to registration.
    widget.model_edit.setText("")
    assert widget.method == "registration"


def test_suggest_moves_the_viewer(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path]
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    viewer.dims.set_current_step(SLIDER_AXIS, 0)
    _click(qtbot, widget, widget.suggest_button)
    # Nothing painted: the shipped model's choice (oneseg select).
    expected = oneseg.select(image=image_file, device="cpu")
    assert viewer.dims.current_step[SLIDER_AXIS] == expected, widget.status
    assert f"slice {expected}" in widget.status

    truth, k = _paint_largest(qtbot, widget, label_file)
    _click(qtbot, widget, widget.suggest_button)
    assert "slice" in widget.status and "least sure" in widget.status, widget.status
    moved = viewer.dims.current_step[SLIDER_AXIS]
    assert moved != k and 0 <= moved < truth.shape[0]
    assert np.array_equal(widget.labels_layer.data[k], truth[k])


def test_suggest_cross_checked_by_registration(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from sparseseg.napari.tasks import suggest_slice

    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    truth, k = _paint_largest(qtbot, widget, label_file)
    labeled = labeled_slices(truth)
    k2 = int(labeled[len(labeled) // 4])
    _paint(qtbot, widget, k2, truth)
    assert widget.cross_check_box.isEnabled() and widget.cross_check is None
    widget.cross_check_box.setChecked(True)
    assert widget.cross_check == "registration"
    _click(qtbot, widget, widget.suggest_button)
    moved = viewer.dims.current_step[SLIDER_AXIS]
    image = read_volume(image_file)
    annotation = np.zeros_like(truth)
    annotation[[k, k2]] = truth[[k, k2]]
    want = {c: suggest_slice(image=image, annotation=annotation, model=widget.model,
                             method="oneseg", painted=[k, k2], cross_check=c).slice
            for c in (None, "registration")}
    assert moved == want["registration"] != want[None], (widget.status, want)
    assert "registration disagrees" in widget.status, widget.status
    assert moved not in (k, k2)
    viewer.screenshot(str(tmp_path / "cross_check.png"), canvas_only=False)
    for method, enabled in (("registration", False), ("interpolation", False), ("copy", True),
                            ("hybrid", True)):
        widget.method_combo.setCurrentText(method)
        assert widget.cross_check_box.isEnabled() == enabled, method
        assert (widget.cross_check is not None) == enabled, method
    # The widget's list (a copy: no torch at import) is the core's propagators but registration.
    from sparseseg.napari.widget import CROSS_CHECK_METHODS
    from sparseseg.oneseg.baselines import PROPAGATORS

    assert tuple(m for m in PROPAGATORS if m != "registration") == CROSS_CHECK_METHODS


def test_suggest_without_a_model_is_the_middle_slice(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path]
) -> None:
    image_file, _ = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    widget.model_edit.setText("")  # the annotator clears the model: training-free methods
    assert widget.model is None and widget.method == "registration"
    viewer.dims.set_current_step(SLIDER_AXIS, 0)
    _click(qtbot, widget, widget.suggest_button)
    expected = middle_slice(read_volume(image_file).array)
    assert viewer.dims.current_step[SLIDER_AXIS] == expected, widget.status
    assert f"slice {expected}" in widget.status


def test_oneseg_model_and_a_bad_model_folder(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tiny_model: Path,
    tmp_path: Path,
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file, model=tiny_model, device="cpu")
    assert widget.method == "oneseg"
    truth, k = _paint_largest(qtbot, widget, label_file)
    _click(qtbot, widget, widget.propagate_button)
    assert "propagated (oneseg)" in widget.status, widget.status
    direct = oneseg.propagate(model=tiny_model, image=image_file, device="cpu",
                              annotation=from_display(np.where(np.arange(16)[:, None, None] == k,
                                                               truth, 0)))
    expected = to_display(direct.array)
    expected[k] = truth[k]
    assert np.array_equal(widget.labels_layer.data, expected)  # what the API gives

    broken = tmp_path / "not_a_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    widget.model_edit.setText(str(broken))
    before = np.array(widget.labels_layer.data, copy=True)
    _click(qtbot, widget, widget.propagate_button)
    assert str(broken) in widget.status, widget.status
    assert "color" in widget.status_label.styleSheet()  # shown as an error
    assert widget.propagate_button.isEnabled()
    assert np.array_equal(widget.labels_layer.data, before)

    widget.model_edit.setText("")
    assert widget.method == "registration"
    viewer.layers.remove(widget.labels_layer)
    widget.labels_combo.setCurrentText("")
    assert widget.labels_layer is None


def test_corrected_slices_are_kept_by_the_next_propagation(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path]
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file)
    labels = widget.labels_layer
    truth, k = _paint_largest(qtbot, widget, label_file)
    _click(qtbot, widget, widget.propagate_button)
    other = max(s for s in labeled_slices(truth) if abs(s - k) >= 3)
    assert not np.array_equal(labels.data[other], truth[other])
    _paint(qtbot, widget, other, truth)  # the annotator corrects a propagated slice
    assert np.array_equal(labels.data[other], truth[other])
    assert widget.painted_slices == sorted({k, other})
    _click(qtbot, widget, widget.propagate_button)
    assert "propagated" in widget.status, widget.status
    assert np.array_equal(labels.data[k], truth[k])
    assert np.array_equal(labels.data[other], truth[other])
    assert len(labeled_slices(labels.data)) >= 8


def test_an_empty_slice_stops_the_labels(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file, method="copy")
    labels = widget.labels_layer
    truth, k = _paint_largest(qtbot, widget, label_file)
    _click(qtbot, widget, widget.propagate_button)
    n = truth.shape[0]
    end = max(labeled_slices(truth)) + 1
    assert end < n and labels.data[end:].any()  # copy runs past the organ to the edge
    viewer.dims.set_current_step(SLIDER_AXIS, end)
    _click(qtbot, widget, widget.empty_button)
    assert f"slice {end} marked empty" in widget.status, widget.status
    assert widget.painted_slices == [k, end] and not labels.data[end].any()
    assert np.array_equal(labels.data[k], truth[k])  # the painted slice untouched
    _click(qtbot, widget, widget.propagate_button)
    assert f"from slice(s) {k} (empty: {end})" in widget.status, widget.status
    assert not labels.data[end:].any()  # nothing at or beyond the empty slice
    assert labels.data[end - 1].any()  # the copy runs right up to it
    want = oneseg.propagate(image=image_file, annotation=from_display(
        np.where(np.arange(n)[:, None, None] == k, truth, 0)), method="copy",
        empty_slices=[end]).array
    assert np.array_equal(from_display(labels.data), want)
    viewer.screenshot(str(tmp_path / "empty.png"), canvas_only=False)
    assert widget.mark_empty(index=n) is None and "outside the volume" in widget.status


def test_autosave_while_painting_and_restore(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], caplog
) -> None:
    import logging

    from sparseseg.napari.autosave import autosaved_empty_slices

    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file, autosave_delay=0.2)
    truth, k = _paint_largest(qtbot, widget, label_file)
    assert find_autosave(image_file) is None  # debounced: not at once
    end = max(labeled_slices(truth)) + 1
    widget.mark_empty(index=end)  # a slice painted empty goes into the autosave's sidecar
    qtbot.waitUntil(lambda: autosaved_empty_slices(image_file) == [end], timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget._autosave_worker is None, timeout=WAIT_MS)
    assert widget.last_autosave is not None
    saved = read_label(find_autosave(image_file))
    assert saved.same_geometry(read_volume(image_file), tolerance=1e-6)
    assert labeled_slices(to_display(saved.array)) == [k]
    assert np.array_equal(to_display(saved.array)[k], truth[k])

    # the viewer "crashed": a new session on the same image opens the autosave
    caplog.set_level(logging.INFO, logger="sparseseg.napari.session")
    viewer2, widget2 = open_viewer(image_file, viewer=make_napari_viewer())
    assert "restoring the autosaved painted slices" in caplog.text
    caplog.clear()
    assert np.array_equal(widget2.labels_layer.data, to_display(saved.array))
    assert widget2.painted_slices == [k, end]  # the empty slice is not forgotten
    assert widget2.restore_button.isEnabled()
    widget2.labels_layer.data[:] = 0
    _click(qtbot, widget2, widget2.restore_button)
    assert np.array_equal(widget2.labels_layer.data[k], truth[k])
    assert widget2.painted_slices == [k, end]
    assert "restored" in widget2.status
    # The autosave is an annotation file like any other: its sidecar goes with it.
    viewer3, widget3 = open_viewer(image_file, labels=find_autosave(image_file),
                                   viewer=make_napari_viewer())
    assert widget3.painted_slices == [k, end]
    assert "restoring the autosaved" not in caplog.text  # labels given, not restored
    want = oneseg.propagate(image=image_file, annotation=find_autosave(image_file),
                            method="copy").array
    assert not want[:, :, end:].any() and want[:, :, end - 1].any()


def test_open_viewer_with_labels(
    make_napari_viewer, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    image_file, label_file = phantom_files
    viewer, widget = open_viewer(image_file, labels=label_file, output=tmp_path / "o.nii.gz",
                                 viewer=make_napari_viewer())
    truth = to_display(read_label(label_file).array)
    assert [layer.name for layer in viewer.layers] == ["case_0000", "case_0000 labels"]
    assert np.array_equal(widget.labels_layer.data, truth)
    assert widget.painted_slices == labeled_slices(truth)
    assert widget.output_edit.text() == str(tmp_path / "o.nii.gz")
    assert viewer.dims.current_step[SLIDER_AXIS] == truth.shape[0] // 2


def test_labels_on_another_grid_are_refused(
    tmp_path: Path, phantom_files: tuple[Path, Path], phantom: tuple[Volume, Volume]
) -> None:
    from sparseseg.io.writer import write_volume

    image_file, _ = phantom_files
    image, label = phantom
    moved = Volume(label.array, image.spacing, (0.0, 0.0, 0.0), image.direction)
    other = write_volume(tmp_path / "moved.nii.gz", label.array, moved)
    with pytest.raises(InputError, match="another grid"):
        open_viewer(image_file, labels=other)


def test_the_plugin_manifest_gives_reader_and_widget(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path]
) -> None:
    image_file, label_file = phantom_files
    viewer = make_napari_viewer()
    [image] = viewer.open(str(image_file), plugin="sparseseg")
    [labels] = viewer.open(str(label_file), plugin="sparseseg")
    assert tuple(image.scale) == tuple(labels.scale) == (3.0, 1.25, 1.5)
    assert type(labels).__name__ == "Labels"
    _, widget = viewer.window.add_plugin_dock_widget("sparseseg", "OneSeg annotation")
    assert isinstance(widget, AnnotationWidget)
    assert (widget.image_layer.name, widget.labels_layer.name) == (image.name, labels.name)
    assert widget.painted_slices == labeled_slices(labels.data)
    k = widget.painted_slices[0]
    widget.labels_layer.data_setitem((np.array([k + 1]), np.array([0]), np.array([0])), 2)
    qtbot.waitUntil(lambda: k + 1 in widget.painted_slices, timeout=WAIT_MS)


@pytest.fixture
def refiner(phantom: tuple[Volume, Volume], tmp_path: Path) -> Path:
    """A refinement network trained for a few seconds on the phantom's labels."""
    import torch

    from sparseseg.io.axes import to_slices
    from sparseseg.oneseg.refinement import (
        RefineConfig,
        SliceStack,
        class_indices,
        save_refiner,
        train_refiner,
    )

    image, label = phantom
    classes = np.unique(label.array)
    torch.manual_seed(0)
    stack = SliceStack(to_slices(image.array), size=32)
    target = stack.target(class_indices(to_slices(label.array), classes))
    net = train_refiner([stack], [target], [[]], n_classes=len(classes),
                        config=RefineConfig(steps=100, batch_size=8, size=32))
    return save_refiner(tmp_path / "refiner", net, classes=classes, size=32)


def test_a_refiner_refines_the_propagation_and_suggests(
    make_napari_viewer, qtbot, phantom_files: tuple[Path, Path], refiner: Path,
    tmp_path: Path
) -> None:
    from sparseseg.napari.tasks import propagate_labels

    image_file, label_file = phantom_files
    viewer, widget = _open(make_napari_viewer, image_file, method="copy")
    truth, k = _paint_largest(qtbot, widget, label_file)
    _click(qtbot, widget, widget.propagate_button)
    copied = widget.labels_layer.data.copy()
    widget.refiner_edit.setText(str(refiner))
    assert widget.refiner == refiner
    assert AnnotationWidget(viewer, refiner=refiner).refiner == refiner  # sparseseg view
    _click(qtbot, widget, widget.propagate_button)
    assert "propagated (copy, refined)" in widget.status, widget.status
    refined = widget.labels_layer.data.copy()
    annotation = np.zeros_like(truth)
    annotation[k] = truth[k]
    want = propagate_labels(image=read_volume(image_file), annotation=annotation, model=None,
                            method="copy", painted=[k], refiner=refiner, device="cpu")
    want[k] = truth[k]
    assert np.array_equal(refined, want)
    assert np.array_equal(refined[k], truth[k])
    # The copy carries one outline everywhere; the network knows where the organs end.
    assert ((refined > 0) == (truth > 0)).mean() > ((copied > 0) == (truth > 0)).mean()
    _click(qtbot, widget, widget.suggest_button)
    assert "refinement network is least sure" in widget.status, widget.status
    assert "confidence" not in widget.status  # the propagation's would mislead
    assert viewer.dims.current_step[SLIDER_AXIS] != k
    assert np.array_equal(widget.labels_layer.data, refined)  # shows the refined labels
    viewer.dims.set_point(SLIDER_AXIS, k + 3)
    viewer.screenshot(str(tmp_path / "refined.png"), canvas_only=False)
    # A folder that is not a refinement network: one line in the status, labels kept.
    widget.refiner_edit.setText(str(tmp_path))
    _click(qtbot, widget, widget.propagate_button)
    assert widget.status == f"{tmp_path}: model folder has no config.json", widget.status
    assert np.array_equal(widget.labels_layer.data, refined)
