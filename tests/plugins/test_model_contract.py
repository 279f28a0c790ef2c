"""segcore.testing's model-contract assertions, against a correct tiny model and deliberately broken ones."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
import segcore.functional as F
from segcore.testing import (
    ModelContractError,
    assert_is_instance_segmentation_model,
    assert_is_semantic_segmentation_model,
)


@pytest.fixture
def models():
    import segcore_test_models

    return segcore_test_models


def test_correct_semantic_model_passes_and_keeps_its_mode_and_grads(models):
    model = models.TinyFCN(num_classes=4).eval()
    assert_is_semantic_segmentation_model(model, num_classes=4, input_size=(3, 3, 9, 7), rng=np.random.default_rng(5))
    assert model.training is False
    assert all(p.grad is None for p in model.parameters())


def test_wrong_forward_shape_fails_with_the_shapes(models):
    class Downsampling(models.TinyFCN):
        def forward(self, images):
            return F.avg_pool2d(self.conv(images), 2)

    with pytest.raises(ModelContractError) as err:
        assert_is_semantic_segmentation_model(Downsampling())
    message = str(err.value)
    assert "Downsampling breaks the semantic segmentation model contract: forward(images of shape (2, 3," in message
    assert "must return logits of shape (N, K, H, W) = (2, K >= 1, 32, 32), got (2, 3, 16, 16)" in message


def test_class_count_other_than_num_classes_fails(models):
    with pytest.raises(ModelContractError, match=r"= \(2, 5, 32, 32\), got \(2, 3, 32, 32\)"):
        assert_is_semantic_segmentation_model(models.TinyFCN(num_classes=3), num_classes=5)


def test_forward_returning_a_dict_fails(models):
    class TorchvisionStyle(models.TinyFCN):
        def forward(self, images):
            return {"out": self.conv(images)}

    with pytest.raises(ModelContractError, match="forward.*must return a logits Tensor, got dict"):
        assert_is_semantic_segmentation_model(TorchvisionStyle())


def test_losses_must_be_a_dict_of_scalars(models):
    class Unreduced(models.TinyFCN):
        def losses(self, images, targets):
            return {"loss_sem_seg": F.cross_entropy(self(images), targets, ignore_index=255, reduction="none")}

    class BareTensor(models.TinyFCN):
        def losses(self, images, targets):
            return F.cross_entropy(self(images), targets, ignore_index=255)

    scalar = r"\['loss_sem_seg'\]: must be a scalar tensor \(shape \(\)\), got shape \(2, 32, 32\)"
    with pytest.raises(ModelContractError, match=scalar):
        assert_is_semantic_segmentation_model(Unreduced())
    with pytest.raises(ModelContractError, match=r"targets\): must return a non-empty dict\[str, Tensor\], got tensor"):
        assert_is_semantic_segmentation_model(BareTensor())


def test_detached_loss_fails(models):
    class Detached(models.TinyFCN):
        def losses(self, images, targets):
            return {"loss": F.cross_entropy(self(images).detach(), targets, ignore_index=255)}

    with pytest.raises(ModelContractError, match=r"\['loss'\]: does not require grad"):
        assert_is_semantic_segmentation_model(Detached())


def test_loss_that_reaches_no_parameter_fails(models):
    class Unconnected(models.TinyFCN):
        def losses(self, images, targets):
            stray = segcore.tensor([1.0], requires_grad=True)
            return {"loss": (stray * stray).sum()}

    class ZeroGradient(models.TinyFCN):
        def losses(self, images, targets):
            return {"loss": (self(images) * 0.0).sum()}

    match = "losses backward: the summed losses do not backpropagate into any parameter"
    with pytest.raises(ModelContractError, match=match):
        assert_is_semantic_segmentation_model(Unconnected())
    with pytest.raises(ModelContractError, match=match):
        assert_is_semantic_segmentation_model(ZeroGradient())


def test_model_raising_is_reported_as_the_part_that_failed(models):
    class NoIgnore(models.TinyFCN):
        def losses(self, images, targets):
            assert np.any(targets.numpy() == 255), "the contract's targets contain ignored pixels"
            return {"loss": F.cross_entropy(self(images), targets)}

    class Crashing(models.TinyFCN):
        def predict(self, images):
            raise RuntimeError("no eval mode")

    with pytest.raises(ModelContractError, match=r"losses\(images, targets\): raised ValueError: .*255") as err:
        assert_is_semantic_segmentation_model(NoIgnore())
    assert isinstance(err.value.__cause__, ValueError)
    with pytest.raises(ModelContractError, match=r"predict\(images\): raised RuntimeError: no eval mode"):
        assert_is_semantic_segmentation_model(Crashing())


def test_predict_must_return_numpy_integer_maps_in_range(models):
    class Tensors(models.TinyFCN):
        def predict(self, images):
            return list(F.argmax(self(images), dim=1))

    class Floats(models.TinyFCN):
        def predict(self, images):
            return [m.astype(np.float32) for m in super().predict(images)]

    class OutOfRange(models.TinyFCN):
        def predict(self, images):
            return [m + self.num_classes for m in super().predict(images)]

    class Batched(models.TinyFCN):
        def predict(self, images):
            return np.stack(super().predict(images))

    class Short(models.TinyFCN):
        def predict(self, images):
            return super().predict(images)[:1]

    with pytest.raises(ModelContractError, match=r"predict\(images\)\[0\]: must be a NumPy array, got Tensor"):
        assert_is_semantic_segmentation_model(Tensors())
    with pytest.raises(ModelContractError, match=r"predict\(images\)\[0\]: dtype must be integer, got float32"):
        assert_is_semantic_segmentation_model(Floats())
    with pytest.raises(ModelContractError, match=r"labels must lie in \[0, 3\), got values in \[3, 5\]"):
        assert_is_semantic_segmentation_model(OutOfRange())
    with pytest.raises(ModelContractError, match="must return a list with one result per image, got ndarray"):
        assert_is_semantic_segmentation_model(Batched())
    with pytest.raises(ModelContractError, match="returned 1 results for 2 images"):
        assert_is_semantic_segmentation_model(Short())


def test_predict_at_wrong_resolution_fails(models):
    class Half(models.TinyFCN):
        def predict(self, images):
            return [m[::2, ::2] for m in super().predict(images)]

    with pytest.raises(ModelContractError, match=r"must have shape \(32, 32\), got \(16, 16\)"):
        assert_is_semantic_segmentation_model(Half())


def test_not_a_module_or_no_parameters_fails(models):
    with pytest.raises(ModelContractError, match="expected a segcore.nn.Module, got function"):
        assert_is_semantic_segmentation_model(lambda x: x)

    class Frozen(models.TinyFCN):
        def __init__(self):
            super().__init__()
            self.requires_grad_(False)

    with pytest.raises(ModelContractError, match="the model has no trainable parameters"):
        assert_is_semantic_segmentation_model(Frozen())


def test_arguments_are_validated(models):
    with pytest.raises(ValueError, match=r"input_size must be four positive ints \(N, C, H, W\), got \(3, 32, 32\)"):
        assert_is_semantic_segmentation_model(models.TinyFCN(), input_size=(3, 32, 32))
    with pytest.raises(ValueError, match="num_classes must be a positive int or None, got 0"):
        assert_is_semantic_segmentation_model(models.TinyFCN(), num_classes=0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator or None, got int"):
        assert_is_semantic_segmentation_model(models.TinyFCN(), rng=0)


def test_correct_instance_model_passes(models):
    model = models.TinyInstanceModel(num_classes=3)
    assert_is_instance_segmentation_model(model, input_size=(2, 3, 16, 12))
    assert model.training is True


def test_instance_predict_types_and_boxes_are_checked(models):
    class IntMasks(models.TinyInstanceModel):
        def predict(self, images):
            out = super().predict(images)
            for result in out:
                result["masks"] = result["masks"].astype(np.uint8)
            return out

    class Inverted(models.TinyInstanceModel):
        def predict(self, images):
            out = super().predict(images)
            for result in out:
                result["boxes"] = result["boxes"][:, [2, 3, 0, 1]]
            return out

    class NoScores(models.TinyInstanceModel):
        def predict(self, images):
            out = super().predict(images)
            for result in out:
                del result["scores"]
            return out

    class Mismatched(models.TinyInstanceModel):
        def predict(self, images):
            out = super().predict(images)
            for result in out:
                result["labels"] = np.array([1, 1])
            return out

    class BadLabel(models.TinyInstanceModel):
        def predict(self, images):
            out = super().predict(images)
            for result in out:
                result["labels"] = np.array([7])
            return out

    with pytest.raises(ModelContractError, match=r"\['masks'\]: dtype must be bool, got uint8"):
        assert_is_instance_segmentation_model(IntMasks())
    with pytest.raises(ModelContractError, match=r"x1 <= x2 and y1 <= y2, got \[32.0, 32.0, 0.0, 0.0\]"):
        assert_is_instance_segmentation_model(Inverted())
    with pytest.raises(ModelContractError, match=r"is missing key\(s\) 'scores'"):
        assert_is_instance_segmentation_model(NoScores())
    with pytest.raises(ModelContractError, match=r"\['labels'\]: must have shape \(1\), got \(2,\)"):
        assert_is_instance_segmentation_model(Mismatched())
    with pytest.raises(ModelContractError, match=r"\['labels'\]: must lie in \[0, 3\), got values in \[7, 7\]"):
        assert_is_instance_segmentation_model(BadLabel())


def test_instance_losses_are_checked_like_semantic_ones(models):
    class Unreduced(models.TinyInstanceModel):
        def losses(self, images, targets):
            return {"loss_mask": F.sigmoid(self(images))}

    match = r"instance segmentation model contract: losses\(images, targets\)\['loss_mask'\]: must be a scalar"
    with pytest.raises(ModelContractError, match=match):
        assert_is_instance_segmentation_model(Unreduced())
