# OV-DETR on OV-COCO. Training data: the 48 base classes' boxes plus the teacher's novel-class pseudo-boxes
# (OV-DETR's "seen_2_proposal" annotations: class-agnostic proposals labelled by CLIP), e.g. from
#   python tools/pseudo_boxes.py configs/pseudo_boxes/ov-coco_vit-b-32.py --out data/coco/annotations/pseudo_boxes_train2017.json
# and the class bank of the teacher's embeddings of those boxes (ovd.data.class_bank.build_class_bank).
_base_ = ["../_base_/models/ovdetr_r50.py", "../_base_/datasets/ov_coco.py", "../_base_/schedules/ovdetr_50e.py",
          "../_base_/default_runtime.py"]
data_root = "data/coco/"
model = dict(vocabulary="ov-coco", conditioning=dict(class_bank=data_root + "ovdetr_class_bank.safetensors"))
train_dataloader = dict(dataset=dict(pipeline={{_base_.detr_train_pipeline}}, feature_store=None,
                                     pseudo_annotations=[data_root + "annotations/pseudo_boxes_train2017.json"],
                                     pseudo_weight="one"))
