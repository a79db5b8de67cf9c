"""mrigen: generative adversarial networks that synthesize brain MRI slices."""

__version__ = "0.1.0"
