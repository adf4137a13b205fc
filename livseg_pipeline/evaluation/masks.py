"""Reading a mask as a boolean array and putting a reference / prediction pair on one grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livseg_pipeline.io.image_io import Image, read_image, reorient_to_canonical, same_grid


class MaskError(ValueError):
    """A mask that cannot be evaluated (several labels, not a label image, other grid); one line."""


def binarize(array: np.ndarray, label: int | None, source: str | Path) -> np.ndarray:
    """Foreground of a label image: ``array == label``, or, with ``label=None``, the nonzero voxels of
    an image holding a single nonzero value (0/1 or 0/255 masks). Several labels, fractions or
    negative values (a CT or a probability map given by mistake) are refused rather than guessed.

    >>> binarize(np.array([0, 255, 255]), None, "m.nii.gz").tolist()
    [False, True, True]
    >>> binarize(np.array([0, 5, 2]), 5, "seg.nii.gz").tolist()
    [False, True, False]
    >>> binarize(np.array([0, 1, 2]), None, "seg.nii.gz")
    Traceback (most recent call last):
    ...
    livseg_pipeline.evaluation.masks.MaskError: seg.nii.gz: holds several labels (1, 2); choose one with --label
    """
    if label is not None:
        return array == label
    nonzero = array[array != 0]
    if nonzero.size and nonzero.min() != nonzero.max():
        values = np.unique(nonzero[:: max(1, nonzero.size // 200_000)])
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if values.size > 8 else "")
        if np.issubdtype(array.dtype, np.floating) and not np.all(values == np.round(values)):
            raise MaskError(f"{source}: holds fractional values ({shown}); not a label mask "
                            "(threshold a probability map first)")
        raise MaskError(f"{source}: holds several labels ({shown}); choose one with --label")
    if nonzero.size and nonzero.min() < 0:
        raise MaskError(f"{source}: holds a negative value ({nonzero.min():g}); not a label mask")
    return array != 0


def load_mask(path: str | Path, label: int | None = None) -> Image:
    """Read a mask file or DICOM series folder; ``Image.array`` is boolean."""
    img = read_image(path)
    return img.with_array(binarize(img.array, label, path))


def _describe(img: Image) -> str:
    g = img.geometry
    fmt = ", ".join
    return (f"shape(z,y,x) {tuple(img.array.shape)}, spacing {fmt(f'{v:.4g}' for v in g.spacing)}, "
            f"origin {fmt(f'{v:.4g}' for v in g.origin)}, orientation {g.orientation_code}")


def _canonical(mask: Image) -> Image:
    # SimpleITK has no boolean pixel type.
    img = reorient_to_canonical(mask.with_array(mask.array.astype(np.uint8)))
    return img.with_array(img.array != 0)


def aligned_pair(ref: Image, pred: Image) -> tuple[Image, Image]:
    """The two masks on one voxel grid. Grids equal up to an axis permutation / flip (e.g. RAS vs LPS
    storage of the same voxels) are both reoriented to LPS, which moves no voxel; any other
    difference is a :class:`MaskError` naming both files, since resampling would change the metrics.
    """
    if same_grid(ref, pred):
        return ref, pred
    if ref.geometry.orientation_code != pred.geometry.orientation_code:
        ref_c, pred_c = _canonical(ref), _canonical(pred)
        if same_grid(ref_c, pred_c):
            return ref_c, pred_c
    raise MaskError(f"grids differ: {ref.source} ({_describe(ref)}) vs {pred.source} ({_describe(pred)}); "
                    "resample the prediction onto the reference grid first")
