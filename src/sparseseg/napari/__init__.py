"""napari plugin: annotate a slice, propagate it, correct it, save it.

Installed with the optional extra ``sparseseg[napari]``. The manifest ``napari.yaml`` declares
a reader (NIfTI, NRRD, MetaImage, DICOM folders, geometry kept) and the annotation dock widget
(:class:`sparseseg.napari.widget.AnnotationWidget`). ``sparseseg view IMAGE`` opens both.

Only this subpackage imports napari and Qt; the modules that hold no Qt code
(:mod:`~sparseseg.napari.layers`, :mod:`~sparseseg.napari.painting`,
:mod:`~sparseseg.napari.autosave`, :mod:`~sparseseg.napari.tasks`) import napari nowhere
either, so they can be used and tested without a display.
"""
