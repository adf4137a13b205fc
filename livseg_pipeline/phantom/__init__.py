"""Synthetic abdominal CT phantoms with whole-liver labels, and cohorts in native dataset layouts.

>>> from livseg_pipeline.phantom import generate_phantom, write_cohort, PhantomCase
"""

from livseg_pipeline.phantom.cohort import write_cohort
from livseg_pipeline.phantom.generator import HARD_CASES, PhantomCase, generate_phantom
from livseg_pipeline.phantom.layouts import LAYOUT_ROOTS, LAYOUTS

__all__ = ["generate_phantom", "write_cohort", "PhantomCase", "HARD_CASES", "LAYOUTS", "LAYOUT_ROOTS"]
