"""Write a phantom as a DICOM CT series (one file per slice) or as DICOM mask slices.

Two flavours are produced, as found in the wild: a hospital export (signed/unsigned storage with
RescaleIntercept -1024, real ImagePositionPatient, proper UIDs) and the 3D-IRCADb style (simplified
geometry with ImagePositionPatient (0, 0, z), intercept 0, values clipped to +-1024, extensionless
``image_K`` files where ``image_0`` is the most caudal slice).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from livseg_pipeline.io.image_io import Image, reorient

UID_PREFIX = "1.2.826.0.1.3680043.10.1450."   # livseg phantom root (deterministic UIDs per seed)


def make_uid(*parts: object) -> str:
    """Deterministic DICOM UID from ``parts``.

    >>> make_uid("case", 1) == make_uid("case", 1) != make_uid("case", 2)
    True
    """
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


@dataclass
class SeriesInfo:
    """Patient / study / series identity written into every slice."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    frame_uid: str
    study_date: str = "20200101"
    series_description: str = "ABDOMEN PV 3.0 B30f"
    series_number: int = 2
    institution: str = "livseg phantom hospital"
    modality: str = "CT"


def _base_dataset(info: SeriesInfo, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_PREFIX + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = info.modality
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.InstitutionName = info.institution
    ds.Manufacturer = "livseg"
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.FrameOfReferenceUID = info.frame_uid
    ds.StudyID = "1"
    ds.SeriesNumber = info.series_number
    ds.SeriesDescription = info.series_description
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _lps_slices(image: Image) -> Image:
    """Axial slices in LPS order (x to the left, y posterior, z increasing)."""
    return reorient(image, "LPS")


def _set_sop(ds: Dataset, sop_uid: str) -> None:
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid


def iter_ct_slices(image: Image, info: SeriesInfo, style: str = "hospital",
                   slice_thickness: float | None = None) -> Iterator[tuple[int, Dataset]]:
    """Yield ``(k, dataset)`` per axial slice, ``k = 0`` most caudal. The same dataset object is
    updated for every slice (encoding dominates the cost): write it out before the next one.

    ``style='hospital'``: real geometry, unsigned storage with RescaleIntercept -1024.
    ``style='ircad'``: ImagePositionPatient (0, 0, z), signed storage, intercept 0, clipped to +-1024.
    """
    img = _lps_slices(image)
    sx, sy, sz = img.geometry.spacing
    ox, oy, oz = img.geometry.origin
    ds = _base_dataset(info, make_uid(info.series_uid, "slice", 0))
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [round(sy, 6), round(sx, 6)]
    ds.SliceThickness = round(slice_thickness or sz, 4)
    ds.SpacingBetweenSlices = round(sz, 4)
    ds.Rows, ds.Columns = img.array.shape[1:]
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.RescaleSlope = 1
    if style == "ircad":
        ds.RescaleIntercept = 0
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
        vol = np.clip(img.array, -1024, 1024).astype(np.int16)
    else:
        ds.RescaleIntercept = -1024
        ds.RescaleType = "HU"
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 12, 11
        ds.PatientPosition = "FFS"
        ds.KVP = 120
        vol = np.clip(img.array.astype(np.int32) + 1024, 0, 4095).astype(np.uint16)
    for k in range(img.array.shape[0]):
        _set_sop(ds, make_uid(info.series_uid, "slice", k))
        z = round(oz + k * sz, 4)
        if style == "ircad":
            ds.ImagePositionPatient = [0.0, 0.0, round(k * sz, 4)]
            ds.InstanceNumber = k
        else:
            ds.ImagePositionPatient = [round(ox, 4), round(oy, 4), z]
            ds.SliceLocation = z
            ds.InstanceNumber = img.array.shape[0] - k     # head first: instance 1 is the top slice
        ds.PixelData = vol[k].tobytes()
        yield k, ds


def iter_mask_slices(mask: Image, info: SeriesInfo, value: int = 255) -> Iterator[tuple[int, Dataset]]:
    """3D-IRCADb mask slices: 8-bit, 0 / ``value``, same simplified geometry as the CT (one dataset
    object updated per slice, as in :func:`iter_ct_slices`)."""
    img = _lps_slices(mask)
    sx, sy, sz = img.geometry.spacing
    ds = _base_dataset(info, make_uid(info.series_uid, "mask", 0))
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [round(sy, 6), round(sx, 6)]
    ds.SliceThickness = round(sz, 4)
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 8, 8, 7
    ds.Rows, ds.Columns = img.array.shape[1:]
    vol = (img.array > 0).astype(np.uint8) * np.uint8(value)
    for k in range(img.array.shape[0]):
        _set_sop(ds, make_uid(info.series_uid, "mask", k))
        ds.ImagePositionPatient = [0.0, 0.0, round(k * sz, 4)]
        ds.InstanceNumber = k
        ds.PixelData = vol[k].tobytes()
        yield k, ds


def dataset_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part-10 file (with preamble)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
