"""GAttANet: global attention agreement for convolutional networks (VanRullen & Alamia, 2021)."""

__version__ = "0.1.0"
