"""Open-vocabulary semantic segmentation: data, models (MaskCLIP, MaskCLIP+, mask proposals), evaluation."""
