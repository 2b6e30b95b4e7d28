import math

import pytest
import torch
import torch.nn.functional as F

from torchvision.ops import boxes as box_ops

from ovd.models.losses import pseudo_label_weights
from ovd.models.vild import ENSEMBLE_LAMBDA, ViLDPredictor, build_vild, ensemble_scores
from tests.tiny_vild import synthetic_batch, tiny_vild



def test_a_few_iterations_lower_the_loss():
    model = tiny_vild()
    model.train()
    images, targets = synthetic_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    totals = []
    for _ in range(12):
        losses = model(images, targets)
        assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_text", "loss_box_reg", "loss_image"}
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        # Cosine logits at temperature 0.01 give large early gradients; the training configs clip too.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        totals.append(total.item())
    assert sum(totals[-3:]) / 3 < 0.7 * sum(totals[:3]) / 3, totals


def test_vocabulary_swap_changes_only_the_classifier():
    model = tiny_vild().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = F.normalize(torch.randn(7, 32), dim=-1)
    model.predictor.classifier.set_text_embeddings(new, base_mask=torch.tensor([True, False] * 3 + [False]))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.allclose(model.predictor.text_embeddings, new, atol=1e-6)
    model.roi_heads.score_thresh = 0.0
    out = model([torch.rand(3, 96, 128)])[0]
    assert out["labels"].max() < 7 and out["scores"].shape == out["labels"].shape
    with pytest.raises(ValueError, match=r"\(C>0, 32\)"):
        model.predictor.classifier.set_text_embeddings(torch.randn(3, 16))


def test_inference_modes_and_ensemble_weights():
    text = torch.tensor([[0.8, 0.1], [0.2, 0.6]])
    image = torch.tensor([[0.1, 0.5], [0.4, 0.3]])
    base = torch.tensor([True, False])
    s = ensemble_scores(text, image, base)
    lam = ENSEMBLE_LAMBDA
    assert torch.allclose(s[0, 0], text[0, 0] ** lam * image[0, 0] ** (1 - lam))
    assert torch.allclose(s[0, 1], text[0, 1] ** (1 - lam) * image[0, 1] ** lam)
    model = tiny_vild().eval()
    heads, pred = model.roi_heads, model.predictor
    pred.classifier.temperature = 1.0  # unsaturated softmax so that the modes can be told apart
    pred.classifier.set_text_embeddings(pred.text_embeddings, base_mask=torch.tensor([True, True, False]))
    t_emb, i_emb = F.normalize(torch.randn(4, 32), dim=-1), F.normalize(torch.randn(4, 32), dim=-1)
    heads.inference_mode = "text"
    text_scores = heads.class_scores(t_emb, i_emb)
    assert torch.allclose(text_scores, F.softmax(pred.logits(t_emb), -1)[:, 1:])
    heads.inference_mode = "image"
    image_scores = heads.class_scores(t_emb, i_emb)
    assert torch.allclose(image_scores, F.softmax(pred.logits(i_emb)[:, 1:], -1))
    heads.inference_mode = "ensemble"
    assert torch.allclose(heads.class_scores(t_emb, i_emb), ensemble_scores(text_scores, image_scores, pred.base_mask))
    heads.score_thresh = 0.0
    out = model([torch.rand(3, 96, 128)])[0]
    assert len(out["boxes"]) > 0 and out["scores"].max() <= 1.0
    heads.inference_mode = "both"
    with pytest.raises(ValueError, match="inference_mode"):
        model([torch.rand(3, 96, 128)])


def hand_predictor(base_mask):
    """2-d embeddings: classes (1, 0), (0, 1), (-1, 0); background (0, -1); temperature 1."""
    pred = ViLDPredictor(8, torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), temperature=1.0,
                         base_mask=torch.tensor(base_mask))
    with torch.no_grad():
        pred.classifier.background.copy_(torch.tensor([0.0, -1.0]))
    return pred


def test_image_branch_is_scored_over_the_classes_without_background_unless_asked():
    model = tiny_vild().eval()
    heads = model.roi_heads
    heads.box_predictor = hand_predictor([True, True, False])
    emb = torch.tensor([[0.6, 0.8]])  # logits: background -0.8, classes 0.6, 0.8, -0.6
    heads.inference_mode = "image"
    exp = [math.exp(v) for v in (0.6, 0.8, -0.6)]
    published = [e / sum(exp) for e in exp]  # ViLD (TPU reference) and DetPro: no background column
    assert heads.class_scores(emb, emb)[0].tolist() == pytest.approx(published, abs=1e-6)
    heads.image_background = True  # wusize/ovdet: softmax with the background, then dropped
    with_bg = [e / (sum(exp) + math.exp(-0.8)) for e in exp]
    assert heads.class_scores(emb, emb)[0].tolist() == pytest.approx(with_bg, abs=1e-6)
    heads.image_background = False
    heads.inference_mode = "ensemble"  # text keeps its background; base 0, 1 weight text by 2/3, novel 2 image
    text = [e / (sum(exp) + math.exp(-0.8)) for e in exp]
    lam = 2 / 3
    expected = [text[0] ** lam * published[0] ** (1 - lam), text[1] ** lam * published[1] ** (1 - lam),
                text[2] ** (1 - lam) * published[2] ** lam]
    assert heads.class_scores(emb, emb)[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_text_loss_is_over_background_and_base_classes_only():
    model = tiny_vild()
    heads = model.roi_heads
    heads.box_predictor = hand_predictor([True, False, True])  # class 1 is novel
    emb = torch.tensor([[0.6, 0.8], [0.0, -1.0]])  # logits [-0.8, 0.6, 0.8, -0.6] and [1, 0, -1, 0]
    labels = torch.tensor([1, 0])  # class 0, background
    # by hand: softmax over (background, class 0, class 2) only
    expected = (-0.6 + math.log(math.exp(-0.8) + math.exp(0.6) + math.exp(-0.6))
                - 1.0 + math.log(math.exp(1.0) + math.exp(0.0) + math.exp(0.0))) / 2
    assert heads.text_loss(emb, labels).item() == pytest.approx(expected, abs=1e-6)
    heads.gt_classes = "all"  # an oracle's softmax takes every class
    full = (-0.6 + math.log(sum(math.exp(v) for v in (-0.8, 0.6, 0.8, -0.6)))
            - 1.0 + math.log(sum(math.exp(v) for v in (1.0, 0.0, -1.0, 0.0)))) / 2
    assert heads.text_loss(emb, labels).item() == pytest.approx(full, abs=1e-6)
    assert heads.text_loss(emb, torch.tensor([2, 0])).item() > 0  # a novel box is fine for the oracle
    heads.gt_classes = "base"
    with pytest.raises(ValueError, match=r"positions \[1\], which are not base classes.*gt_classes='all'"):
        heads.text_loss(emb, torch.tensor([2, 0]))
    with pytest.raises(ValueError, match="gt_classes must be 'base' or 'all'"):
        tiny_vild(gt_classes="novel")


def test_novel_logits_get_no_gradient_in_training():
    model = tiny_vild()
    model.predictor.classifier.set_text_embeddings(model.predictor.text_embeddings, base_mask=torch.tensor([True, False, True]))
    seen = []
    logits = model.predictor.logits
    def keep(emb):
        out = logits(emb)
        out.retain_grad()
        seen.append(out)
        return out
    model.predictor.logits = keep
    model.train()
    images, targets = synthetic_batch()
    targets[1]["labels"] = torch.tensor([2])  # classes 0 and 2 are base
    losses = model(images, targets)
    losses["loss_text"].backward()
    grad = seen[0].grad
    assert grad[:, 2].abs().max() == 0  # column 2 = class 1, novel
    assert grad[:, [0, 1, 3]].abs().sum(0).min() > 0
    targets[1]["labels"] = torch.tensor([1])
    with pytest.raises(ValueError, match="not base classes"):
        model(images, targets)


def test_separate_heads_give_the_image_branch_its_own_box_head():
    model = tiny_vild()
    heads = model.roi_heads
    assert heads.image_box_head is not None and heads.image_box_head is not heads.box_head
    assert not torch.equal(heads.image_box_head.fc6.weight, heads.box_head.fc6.weight)
    assert any(k.startswith("roi_heads.image_box_head.") for k in model.state_dict())
    model.train()
    images, targets = synthetic_batch()
    losses = model(images, targets)
    losses["loss_image"].backward()
    assert heads.image_box_head.fc6.weight.grad.abs().sum() > 0
    assert heads.box_head.fc6.weight.grad is None and heads.box_predictor.text_proj.weight.grad is None
    model.zero_grad()
    losses = model(images, targets)
    losses["loss_text"].backward()
    assert heads.image_box_head.fc6.weight.grad is None
    shared = tiny_vild(separate_heads=False)
    assert shared.roi_heads.image_box_head is None
    assert shared.predictor.image_proj is shared.predictor.text_proj


def test_mask_head_variant_trains_and_predicts_class_agnostic_masks():
    model = tiny_vild(with_mask=True)
    images, targets = synthetic_batch()
    for img, t in zip(images, targets):
        m = torch.zeros(1, *img.shape[-2:], dtype=torch.uint8)
        x0, y0, x1, y1 = t["boxes"][0].long().tolist()
        m[0, y0:y1, x0:x1] = 1
        t["masks"] = m
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    first = None
    for _ in range(8):
        losses = model(images, targets)
        if first is None:
            first = losses["loss_mask"].item()
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
    assert "loss_mask" in losses and losses["loss_mask"].item() < first
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 1
    model.eval()
    model.roi_heads.score_thresh = 0.0
    out = model([images[0]])[0]
    assert len(out["boxes"]) > 0 and out["masks"].shape == (len(out["boxes"]), 1, 96, 128)
    assert 0 <= out["masks"].min() and out["masks"].max() <= 1
    del targets[0]["masks"]
    model.train()
    with pytest.raises(ValueError, match="needs 'masks'"):
        model(images, targets)


def test_text_mode_skips_the_image_head():
    model = tiny_vild().eval()
    model.roi_heads.inference_mode = "text"
    calls = []
    model.predictor.image_proj.register_forward_hook(lambda *a: calls.append(1))
    model([torch.rand(3, 96, 128)])
    assert not calls
    model.roi_heads.inference_mode = "ensemble"
    model([torch.rand(3, 96, 128)])
    assert calls


def test_small_mobilenet_student_trains_and_stays_small():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(5, 32), dim=-1)
    model = build_vild(text, backbone="mobilenet_v3_small", backbone_norm="gn", fpn_channels=64, fpn_levels=3,
                       anchor_sizes=(16, 32, 64, 128), box_head_dim=128, min_size=96, max_size=128,
                       box_batch_size_per_image=32)
    assert sum(p.numel() for p in model.parameters()) < 2_500_000
    images, targets = synthetic_batch()
    losses = model(images, targets)
    assert {"loss_text", "loss_image", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    model.roi_heads.score_thresh = 0.0
    assert len(model([images[0]])[0]["boxes"]) > 0
    with pytest.raises(ValueError, match="anchor_sizes needs 4 sizes"):
        build_vild(text, backbone="mobilenet_v3_small", fpn_channels=64, fpn_levels=3, anchor_sizes=(16, 32))
    with pytest.raises(ValueError, match="backbone_norm must be one of"):
        build_vild(text, backbone="resnet18", backbone_norm="layer")


@pytest.mark.parametrize("trainable,norm", [(0, "bn"), (2, "frozen_bn")])
def test_teacher_trunk_backbone_freezes_what_it_is_told_and_leaves_the_teacher_alone(tiny_rn, tiny_vit, trainable,
                                                                                      norm):
    from torchvision.ops.misc import FrozenBatchNorm2d

    from ovclip.teacher import TeacherError, image_trunk
    torch.manual_seed(0)
    text = F.normalize(torch.randn(5, tiny_rn.embed_dim), dim=-1)
    teacher_before = {k: v.clone() for k, v in tiny_rn.visual.state_dict().items()}
    model = build_vild(text, backbone="teacher", trunk=image_trunk(tiny_rn), trainable_layers=trainable,
                       backbone_norm=norm, fpn_channels=32, fpn_levels=3, anchor_sizes=(16, 32, 64, 128),
                       box_head_dim=64, min_size=96, max_size=128, box_batch_size_per_image=32,
                       image_mean=list(tiny_rn.mean), image_std=list(tiny_rn.std))
    trunk = model.backbone.body
    assert set(trunk) == {"conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool",
                          "layer1", "layer2", "layer3", "layer4"}  # no attention pool
    grads = {name: any(p.requires_grad for p in trunk[name].parameters()) for name in ("conv1", "layer1", "layer2",
                                                                                       "layer3", "layer4")}
    assert grads == {"conv1": False, "layer1": False, "layer2": False, "layer3": trainable >= 2,
                     "layer4": trainable >= 1}
    assert any(isinstance(m, FrozenBatchNorm2d) for m in trunk.modules()) == (norm == "frozen_bn")
    images = [torch.rand(3, 96, 128), torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 15.0, 60.0, 70.0]]), "labels": torch.tensor([i]),
                "distill_boxes": torch.tensor([[10.0, 15.0, 60.0, 70.0]]),
                "distill_embeddings": F.normalize(torch.randn(1, tiny_rn.embed_dim), dim=-1)} for i in range(2)]
    sum(model(images, targets).values()).backward()
    assert model.backbone.fpn.inner_blocks[0][0].weight.grad is not None
    assert (trunk["layer4"][0].conv1.weight.grad is not None) == (trainable >= 1)
    assert all(torch.equal(v, tiny_rn.visual.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in tiny_rn.visual.parameters())
    with pytest.raises(ValueError, match="backbone_weights=None"):
        build_vild(text, backbone="teacher", trunk=image_trunk(tiny_rn), backbone_weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="needs the teacher's image trunk"):
        build_vild(text, backbone="teacher")
    with pytest.raises(ValueError, match="'bn' or 'frozen_bn'"):
        build_vild(text, backbone="teacher", trunk=image_trunk(tiny_rn), backbone_norm="gn")
    with pytest.raises(TeacherError, match="ModifiedResNet"):
        image_trunk(tiny_vit)


def test_roi_sampling_ratio_sets_the_box_roialign_and_is_checked():
    from torchvision.ops import roi_align
    default, adaptive = tiny_vild(), tiny_vild(roi_sampling_ratio=0)
    assert default.roi_heads.box_roi_pool.sampling_ratio == 2  # torchvision's
    pool = adaptive.roi_heads.box_roi_pool
    assert pool.sampling_ratio == 0 and pool.featmap_names == ["0", "1", "2", "3"]
    # one level: the pooled features are torchvision's adaptive RoIAlign of that level
    feats = {"0": torch.rand(1, 4, 32, 32)}
    box = torch.tensor([[3.0, 5.0, 60.0, 40.0]])
    one = type(pool)(["0"], 7, 0)
    out = one(feats, [box], [(64, 64)])
    assert torch.allclose(out, roi_align(feats["0"], [box], 7, spatial_scale=0.5, sampling_ratio=0, aligned=False))
    assert not torch.allclose(out, roi_align(feats["0"], [box], 7, spatial_scale=0.5, sampling_ratio=2))
    adaptive.train()
    images, targets = synthetic_batch()
    sum(adaptive(images, targets).values()).backward()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="roi_sampling_ratio must be an integer >= 0"):
            tiny_vild(roi_sampling_ratio=bad)


def test_checkpoints_from_before_the_shared_classifier_still_load():
    model = tiny_vild()
    state = model.state_dict()
    old = {k.replace("box_predictor.classifier.background", "box_predictor.background"): v.clone() + 1.0
           if "classifier.background" in k else v for k, v in state.items()}
    assert "roi_heads.box_predictor.background" in old
    fresh = tiny_vild()
    fresh.load_state_dict(old)
    assert torch.equal(fresh.predictor.classifier.background, state["roi_heads.box_predictor.classifier.background"] + 1)


def test_pseudo_label_weights_scale_each_sample_as_vl_plm():
    model = tiny_vild()
    heads = model.roi_heads
    heads.box_predictor = hand_predictor([True, False, True])
    heads.gt_classes = "all"
    emb = torch.tensor([[0.6, 0.8], [0.0, -1.0]])  # logits [-0.8, 0.6, 0.8, -0.6] and [1, 0, -1, 0]
    labels = torch.tensor([2, 0])  # a pseudo-labelled class-1 box (weight 0.85) and a background sample (0.5)
    ce = [-0.8 + math.log(sum(math.exp(v) for v in (-0.8, 0.6, 0.8, -0.6))),
          -1.0 + math.log(sum(math.exp(v) for v in (1.0, 0.0, -1.0, 0.0)))]
    weighted = heads.text_loss(emb, labels, torch.tensor([0.85, 0.5])).item()
    assert weighted == pytest.approx((0.85 * ce[0] + 0.5 * ce[1]) / 2, abs=1e-6)  # mean over samples (VL-PLM)
    # Each sample takes the weight of the annotation it overlaps most, background samples too.
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "weights": torch.tensor([1.0, 0.85])},
               {"boxes": torch.zeros(0, 4), "weights": torch.zeros(0)}]
    proposals = [torch.tensor([[21.0, 21, 40, 40], [0, 0, 9, 9], [50, 50, 60, 60]]), torch.tensor([[0.0, 0, 5, 5]])]
    assert pseudo_label_weights(proposals, targets).tolist() == pytest.approx([0.85, 1.0, 1.0, 1.0])
    assert pseudo_label_weights(proposals, [{"boxes": t["boxes"]} for t in targets]) is None


def test_training_step_with_weights_runs_and_weights_change_the_loss():
    images, targets = synthetic_batch()
    model = tiny_vild(image_loss_weight=0.0)
    model.train()
    torch.manual_seed(0)
    plain = model(images, [dict(t) for t in targets])
    torch.manual_seed(0)
    same = model(images, [{**t, "weights": torch.ones(1)} for t in targets])
    assert same["loss_text"].item() == pytest.approx(plain["loss_text"].item(), rel=1e-5)
    torch.manual_seed(0)
    half = model(images, [{**t, "weights": torch.full((1,), 0.5)} for t in targets])
    assert half["loss_text"].item() == pytest.approx(0.5 * plain["loss_text"].item(), rel=1e-5)
    assert half["loss_box_reg"].item() == pytest.approx(0.5 * plain["loss_box_reg"].item(), rel=1e-5)


def test_proposal_refinement_applies_the_roi_head_regression_repeatedly():
    images, _ = synthetic_batch()
    model = tiny_vild().eval()
    (b0, s0), = model.proposals(images[:1])
    (b2, s2), = model.proposals(images[:1], refine=2)
    assert torch.equal(s0, s2) and b2.shape == b0.shape and not torch.allclose(b0, b2)
    # By hand: twice (features, head, decode, clip) on the RPN's boxes; the image is not resized here
    # (96 x 128 inside min_size 96 / max_size 128), so resized and original pixels agree.
    heads, size = model.roi_heads, images[0].shape[-2:]
    features = model.backbone(model.transform(images[:1])[0].tensors)
    boxes = b0
    for _ in range(2):
        _, _, deltas = heads._embed(features, [boxes], [tuple(size)], with_image=False)
        boxes = box_ops.clip_boxes_to_image(heads.box_coder.decode(deltas, [boxes]).reshape(-1, 4), tuple(size))
    assert torch.allclose(boxes, b2, atol=1e-4)
