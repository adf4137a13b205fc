"""Tissue classes of the phantom and their CT numbers (HU) per contrast phase.

The generator paints a tissue map (one uint8 class per voxel); this table turns it into HU. Values
follow typical adult abdominal CT: portal-venous phase (~70 s after injection) vs. non-contrast
(e.g. the low-dose CT of a PET/CT or SPECT/CT, common in SIRT work-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class T(IntEnum):
    """Tissue classes painted into the phantom's tissue map."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    VISCERAL_FAT = 3
    BOWEL_WALL = 4
    BOWEL_GAS = 5
    BOWEL_FLUID = 6
    LUNG = 7
    HEART = 8
    CORTICAL_BONE = 9
    CANCELLOUS_BONE = 10
    DISC = 11
    CSF = 12
    AORTA = 13
    IVC = 14
    PORTAL_VEIN = 15        # extrahepatic trunk: not liver
    PORTAL_BRANCH = 16      # intrahepatic: liver
    HEPATIC_VEIN = 17       # intrahepatic: liver
    LIVER = 18
    LESION_HYPO = 19
    LESION_HYPER = 20
    CYST = 21
    GALLBLADDER = 22
    SPLEEN = 23
    KIDNEY_CORTEX = 24
    KIDNEY_MEDULLA = 25
    STOMACH_WALL = 26
    STOMACH_FLUID = 27
    STOMACH_AIR = 28
    PANCREAS = 29
    TABLE = 30
    DENSE_LESION = 31       # e.g. lipiodol-laden or calcified: very bright, still liver
    RIB_CARTILAGE = 32


#: Tissues that belong to the whole-liver label (lesions and intrahepatic vessels included).
LIVER_TISSUES = (T.LIVER, T.LESION_HYPO, T.LESION_HYPER, T.CYST, T.DENSE_LESION, T.PORTAL_BRANCH,
                 T.HEPATIC_VEIN)
#: Tissues of the tumour label (LiTS / MSD label 2).
LESION_TISSUES = (T.LESION_HYPO, T.LESION_HYPER, T.CYST, T.DENSE_LESION)


@dataclass(frozen=True)
class HU:
    """Mean CT number and the standard deviation of the smooth within-organ texture."""

    mean: float
    texture: float = 0.0


# Portal-venous phase. Liver/lesion values are overridden per case (see generator).
PORTAL: dict[T, HU] = {
    T.AIR: HU(-1000), T.FAT: HU(-100, 8), T.MUSCLE: HU(55, 5), T.VISCERAL_FAT: HU(-95, 10),
    T.BOWEL_WALL: HU(65, 10), T.BOWEL_GAS: HU(-950, 20), T.BOWEL_FLUID: HU(20, 6),
    T.LUNG: HU(-860, 25), T.HEART: HU(140, 8), T.CORTICAL_BONE: HU(750, 80),
    T.CANCELLOUS_BONE: HU(230, 30), T.DISC: HU(85, 6), T.CSF: HU(12, 4), T.AORTA: HU(165, 6),
    T.IVC: HU(135, 10), T.PORTAL_VEIN: HU(175, 6), T.PORTAL_BRANCH: HU(165, 6),
    T.HEPATIC_VEIN: HU(150, 6), T.LIVER: HU(110, 5), T.LESION_HYPO: HU(55, 8),
    T.LESION_HYPER: HU(175, 10), T.CYST: HU(8, 3), T.GALLBLADDER: HU(12, 3), T.SPLEEN: HU(120, 5),
    T.KIDNEY_CORTEX: HU(185, 8), T.KIDNEY_MEDULLA: HU(150, 8), T.STOMACH_WALL: HU(95, 8),
    T.STOMACH_FLUID: HU(18, 4), T.STOMACH_AIR: HU(-980, 10), T.PANCREAS: HU(100, 8),
    T.TABLE: HU(-350, 30), T.DENSE_LESION: HU(450, 60), T.RIB_CARTILAGE: HU(150, 20),
}

# Non-contrast: blood ~40 HU, parenchyma close together (liver ~55, spleen ~45, muscle ~50).
NATIVE: dict[T, HU] = dict(PORTAL)
NATIVE.update({
    T.HEART: HU(42, 5), T.AORTA: HU(42, 4), T.IVC: HU(40, 4), T.PORTAL_VEIN: HU(42, 4),
    T.PORTAL_BRANCH: HU(44, 4), T.HEPATIC_VEIN: HU(42, 4), T.LIVER: HU(55, 4),
    T.LESION_HYPO: HU(32, 6), T.LESION_HYPER: HU(68, 6), T.SPLEEN: HU(46, 4),
    T.KIDNEY_CORTEX: HU(32, 4), T.KIDNEY_MEDULLA: HU(30, 4), T.STOMACH_WALL: HU(42, 5),
    T.PANCREAS: HU(42, 5), T.BOWEL_WALL: HU(40, 6), T.MUSCLE: HU(50, 5),
})

PHASES = {"portal": PORTAL, "none": NATIVE}


def hu_table(contrast: str) -> dict[T, HU]:
    """HU table for ``contrast`` (``'portal'`` or ``'none'``).

    >>> hu_table("none")[T.LIVER].mean, hu_table("portal")[T.LIVER].mean
    (55, 110)
    """
    try:
        return PHASES[contrast]
    except KeyError:
        raise ValueError(f"contrast must be one of {sorted(PHASES)}, got {contrast!r}") from None
