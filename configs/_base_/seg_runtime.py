# Runtime of the segmentation configs: the default runtime in the ovseg registry scope.
_base_ = ["./default_runtime.py"]
default_scope = "ovseg"
