"""livseg: self-configuring 3-pathway DeepMedic whole-liver segmentation on CT for SIRT planning."""

__version__ = "0.1.0"
