"""Serving cxrdecomp: a web viewer (:mod:`cxrdecomp.serve.web`) and a DICOM node (:mod:`cxrdecomp.serve.pacs`).

Both reuse the batch machinery: :func:`cxrdecomp.io.radiograph.read_radiograph` to read,
:class:`cxrdecomp.decomposer.Decomposer` to decompose and :func:`cxrdecomp.batch.write_case` to write
16-bit PNGs, derived DICOM series (same study, new series) and a preview. Research use only, not
for diagnosis.
"""
