"""IVADAS anomaly engine: PatchCore and SoftPatch on pretrained CNN features."""

__version__ = "0.1.0"
