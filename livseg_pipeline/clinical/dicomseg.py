"""DICOM Segmentation (SEG): the liver as one binary segment referencing the source CT series.

Written with highdicom: one segment "Liver", coded with SNOMED CT as the DICOM standard's
segmentation context groups do (CID 7150 category "Anatomical Structure" SCT 123037004, CID 7166
type "Liver" SCT 10200004), algorithm type AUTOMATIC with the livseg algorithm identification, one
frame per CT slice that contains liver, each frame referencing its source SOPInstanceUID.

Reading (:func:`read_dicom_seg`) returns the segment on the grid of ``read_image(dicom_folder)``,
matching frames to slices by their referenced SOPInstanceUIDs (frames the SEG leaves out are empty).

Output file names come from the caller (the case id), never from header values.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from livseg_pipeline.clinical.dicom_series import load_series, mask_on_series_grid, read_dicom_object
from livseg_pipeline.io.image_io import Image
from livseg_pipeline.utils.files import atomic_path

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# (code value, coding scheme, meaning)
CATEGORY_ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")
TYPE_LIVER = ("10200004", "SCT", "Liver")
LIVER_RGB = (221, 130, 101)


class DicomSegError(ValueError):
    """A DICOM SEG cannot be written or read; the message names the file and the reason."""


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("livseg_pipeline")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "dev"


def write_dicom_seg(mask: Image, dicom_folder: str | Path, out_path: str | Path, *, series_uid: str | None = None,
                    segment_label: str = "Liver",
                    series_description: str = "livseg liver (automatic, unapproved)") -> Path:
    """Write ``mask`` (on the series' grid or a reorientation of it) as a binary DICOM SEG.

    Atomic; returns ``out_path``. The SEG shares the series' StudyInstanceUID and
    FrameOfReferenceUID and references the SeriesInstanceUID and each slice's SOPInstanceUID.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    out_path = Path(out_path)
    series = load_series(dicom_folder, series_uid)
    native = mask_on_series_grid(mask, series).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(name="livseg", version=_version(),
                                                   family=codes.cid7162.ArtificialIntelligence)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=segment_label,
        segmented_property_category=Code(*CATEGORY_ANATOMICAL_STRUCTURE),
        segmented_property_type=Code(*TYPE_LIVER),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*LIVER_RGB))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=series.header_copies(), pixel_array=native,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
            series_instance_uid=hd.UID(), series_number=9902, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="livseg", manufacturer_model_name="livseg_pipeline", software_versions=_version(),
            device_serial_number="0", series_description=series_description,
            content_label="LIVER", content_description="automatic liver segmentation; review before clinical use",
            omit_empty_frames=bool(native.any()))
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return out_path


def read_dicom_seg(seg_path: str | Path, dicom_folder: str | Path, segment_regex: str = "liver", *,
                   series_uid: str | None = None) -> Image:
    """The segment whose label matches ``segment_regex`` (case-insensitive; a SEG with a single
    segment needs no match) as a uint8 0/1 :class:`Image` on the referenced series' native grid."""
    import highdicom as hd

    path = Path(seg_path)
    ds = read_dicom_object(path, SEG_SOP_CLASS, "a DICOM SEG", DicomSegError)
    seg = hd.seg.Segmentation.from_dataset(ds)
    numbers = list(seg.segment_numbers)
    labels = {n: str(seg.get_segment_description(n).segment_label) for n in numbers}
    hits = [n for n in numbers if re.search(segment_regex, labels[n], re.IGNORECASE)]
    if len(numbers) == 1 and not hits:
        hits = numbers
    if len(hits) != 1:
        names = ", ".join(repr(labels[n]) for n in (hits or numbers))
        what = "no segment label matches" if not hits else f"{len(hits)} segments match"
        raise DicomSegError(f"{path}: {what} {segment_regex!r} ({names})")
    if series_uid is None:
        refs = {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])}
        series_uid = refs.pop() if len(refs) == 1 else None
    series = load_series(dicom_folder, series_uid)
    if series.frame_of_reference_uid and str(ds.get("FrameOfReferenceUID", "")) not in (
            "", series.frame_of_reference_uid):
        raise DicomSegError(f"{path}: frame of reference {ds.FrameOfReferenceUID} differs from the series in "
                            f"{dicom_folder} ({series.frame_of_reference_uid})")
    referenced = {str(uid[2]) for uid in seg.get_source_image_uids()}
    unknown = referenced - set(series.sop_instance_uids)
    if unknown:
        raise DicomSegError(f"{path}: references {len(unknown)} images that are not in series {series.series_uid} "
                            f"of {dicom_folder}")
    present = [uid for uid in series.sop_instance_uids if uid in referenced]
    out = np.zeros(series.shape, dtype=np.uint8)
    if present:
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=present, segment_numbers=hits[0:1],
                                                   assert_missing_frames_are_empty=True)
        index = {uid: k for k, uid in enumerate(series.sop_instance_uids)}
        for i, uid in enumerate(present):
            out[index[uid]] = pixels[i, :, :, 0] > 0
    return Image(out, series.geometry, str(path))


def read_dicom_seg_mask(seg_path: str | Path, dicom_folder: str | Path, segment_regex: str = "liver", *,
                        series_uid: str | None = None) -> np.ndarray:
    """Bool mask ``(z, y, x)`` on the grid of ``read_image(dicom_folder)`` (see :func:`read_dicom_seg`)."""
    return read_dicom_seg(seg_path, dicom_folder, segment_regex, series_uid=series_uid).array > 0
