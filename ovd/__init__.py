"""ovd: open-vocabulary detection students (ViLD, DetPro, DETR) built on ovclip."""
