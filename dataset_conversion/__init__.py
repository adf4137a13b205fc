"""Converters from public liver datasets and hospital exports into livseg's raw (nnU-Net) layout.

One shared base (:mod:`dataset_conversion.base`) and one small module per source. ``CONVERTERS``
maps the ``lvs_convert SOURCE`` names to their classes.
"""

from dataset_conversion.base import CaseError, ConversionError, Converter, SourceCase, run_conversion
from dataset_conversion.ircadb import IrcadbConverter
from dataset_conversion.lits import LitsConverter
from dataset_conversion.msd import MsdConverter
from dataset_conversion.nifti import NiftiConverter
from dataset_conversion.sirt import SirtConverter
from dataset_conversion.sliver07 import Sliver07Converter

CONVERTERS: dict[str, type[Converter]] = {c.source: c for c in (
    LitsConverter, MsdConverter, Sliver07Converter, IrcadbConverter, SirtConverter, NiftiConverter)}

__all__ = ["CONVERTERS", "CaseError", "ConversionError", "Converter", "SourceCase", "run_conversion"]
