"""ovseg: open-vocabulary segmentation (MaskCLIP, MaskCLIP+, mask proposals) built on ovclip."""
