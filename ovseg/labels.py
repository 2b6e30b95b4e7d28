"""The label values of segmentation maps that are not a class of the vocabulary (a module of its own, so that
the evaluator loads without the datasets' torchvision transforms)."""

IGNORE = 255  # label value that no loss and no metric counts
# Labelled as belonging to no class of the vocabulary (the synthetic world's background): no loss, no
# metric, and no pseudo-label either, unlike IGNORE (unlabelled) pixels.
BACKGROUND = 254
