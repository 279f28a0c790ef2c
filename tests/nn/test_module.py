"""Module machinery: registration, traversal, state_dict / load_state_dict, modes, moves, repr, containers.

These tests use only arithmetic ops (``@``, ``+``) in forward passes so that they check the Module machinery
independently of the layer implementations.
"""

from collections import OrderedDict

import numpy as np
import pytest

import segcore
from segcore import nn
from segcore.errors import BackendMismatchError


def param(values, dtype=np.float32):
    return nn.Parameter(segcore.tensor(np.asarray(values, dtype=dtype)))


class Affine(nn.Module):
    """y = x @ w + b, written with arithmetic ops only."""

    def __init__(self, n_in, n_out, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w = param(rng.standard_normal((n_in, n_out)))
        self.b = param(rng.standard_normal(n_out))

    def forward(self, x):
        return x @ self.w + self.b


class Stats(nn.Module):
    """A module with a persistent buffer, a non-persistent buffer and a parameter."""

    def __init__(self, n):
        super().__init__()
        self.scale = param(np.ones(n))
        self.register_buffer("count", segcore.tensor(np.array(0, dtype=np.int64)))
        self.register_buffer("running", segcore.tensor(np.zeros(n, dtype=np.float32)))
        self.register_buffer("cache", segcore.tensor(np.zeros(n, dtype=np.float32)), persistent=False)

    def forward(self, x):
        return x * self.scale


class Block(nn.Module):
    def __init__(self, n, seed):
        super().__init__()
        self.conv1 = Affine(n, n, seed)
        self.bn1 = Stats(n)
        self.conv2 = Affine(n, n, seed + 1)

    def forward(self, x):
        return self.conv2(self.bn1(self.conv1(x)))


class Backbone(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.stem = Affine(n, n, 10)
        self.layer1 = nn.Sequential(Block(n, 20), Block(n, 30))

    def forward(self, x):
        return self.layer1(self.stem(x))


class Net(nn.Module):
    def __init__(self, n=3, classes=2):
        super().__init__()
        self.backbone = Backbone(n)
        self.heads = nn.ModuleDict({"cls": Affine(n, classes, 40)})
        self.aux = nn.ModuleList([Affine(n, classes, 50)])
        self.temperature = 2.0  # plain attribute: not state

    def forward(self, x):
        return self.heads["cls"](self.backbone(x))


EXPECTED_NET_KEYS = [
    "backbone.stem.w",
    "backbone.stem.b",
    "backbone.layer1.0.conv1.w",
    "backbone.layer1.0.conv1.b",
    "backbone.layer1.0.bn1.scale",
    "backbone.layer1.0.bn1.count",
    "backbone.layer1.0.bn1.running",
    "backbone.layer1.0.conv2.w",
    "backbone.layer1.0.conv2.b",
    "backbone.layer1.1.conv1.w",
    "backbone.layer1.1.conv1.b",
    "backbone.layer1.1.bn1.scale",
    "backbone.layer1.1.bn1.count",
    "backbone.layer1.1.bn1.running",
    "backbone.layer1.1.conv2.w",
    "backbone.layer1.1.conv2.b",
    "heads.cls.w",
    "heads.cls.b",
    "aux.0.w",
    "aux.0.b",
]


# -- registration -------------------------------------------------------------------------------------------
def test_setattr_registers_parameters_buffers_and_modules():
    m = Stats(3)
    assert list(m._parameters) == ["scale"]
    assert list(m._buffers) == ["count", "running", "cache"]
    m.child = Affine(3, 3)
    assert list(m._modules) == ["child"]
    m.plain = segcore.tensor([1.0, 2.0])  # a Tensor that is not registered stays a plain attribute
    assert "plain" not in m._buffers and "plain" not in m._parameters
    assert m.plain.tolist() == [1.0, 2.0]


def test_assigning_tensor_to_registered_buffer_replaces_it():
    m = Stats(2)
    new = segcore.tensor(np.full(2, 5.0, dtype=np.float32))
    m.running = new
    assert m._buffers["running"] is new
    assert m.state_dict()["running"].tolist() == [5.0, 5.0]


def test_assigning_plain_tensor_to_parameter_name_is_a_type_error():
    m = Stats(2)
    with pytest.raises(TypeError, match=r"parameter 'scale'.*Parameter or None"):
        m.scale = segcore.tensor([1.0, 2.0])
    m.scale = None  # declared but absent, like bias=False
    assert "scale" not in dict(m.named_parameters())
    assert "scale" not in m.state_dict()


def test_replacing_a_parameter_or_module_keeps_its_state_dict_position():
    net = Block(2, 0)
    net.conv1 = Affine(2, 2, seed=9)  # e.g. swapping a classifier when fine-tuning
    net.conv1.w = param(np.zeros((2, 2)))
    assert list(net.state_dict()) == [
        "conv1.w", "conv1.b", "bn1.scale", "bn1.count", "bn1.running", "conv2.w", "conv2.b",
    ]  # fmt: skip
    assert not net.conv1.w.numpy().any()


def test_parameter_replacing_buffer_changes_kind():
    m = Stats(2)
    m.running = param([1.0, 2.0])
    assert "running" in m._parameters and "running" not in m._buffers


def test_registration_errors_name_the_argument():
    class Early(nn.Module):
        def __init__(self):
            self.w = param([1.0])

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\)"):
        Early()
    m = nn.Module()
    with pytest.raises(ValueError, match=r"contain no '\.'.*'a\.b'"):
        m.register_buffer("a.b", segcore.tensor([1.0]))
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'w'"):
        m.register_parameter("w", segcore.tensor([1.0]))
    with pytest.raises(TypeError, match="buffer 'x'.*Tensor or None expected"):
        m.register_buffer("x", np.zeros(2))
    with pytest.raises(TypeError, match="list is not a segcore.nn.Module"):
        m.add_module("child", [])
    m.attr = 1
    with pytest.raises(KeyError, match="attribute 'attr' already exists"):
        m.register_buffer("attr", segcore.tensor([1.0]))


def test_missing_attribute_error_names_class_and_attribute():
    with pytest.raises(AttributeError, match="'Stats' object has no attribute 'nope'"):
        Stats(2).nope


def test_delattr_unregisters():
    m = Stats(2)
    del m.running
    del m.scale
    assert list(m.state_dict()) == ["count"]


def test_forward_missing_raises_not_implemented():
    with pytest.raises(NotImplementedError, match=r"Module \[Module\] is missing the required \"forward\""):
        nn.Module()(1)


# -- traversal and counting ---------------------------------------------------------------------------------
def test_state_dict_keys_of_nested_model():
    net = Net()
    assert list(net.state_dict()) == EXPECTED_NET_KEYS
    assert isinstance(net.state_dict(), OrderedDict)


def test_state_dict_values_are_detached_and_share_data():
    net = Net()
    sd = net.state_dict()
    w = net.backbone.stem.w
    assert sd["backbone.stem.w"] is not w
    assert not sd["backbone.stem.w"].requires_grad
    assert sd["backbone.stem.w"].data is w.data
    assert net.state_dict(keep_vars=True)["backbone.stem.w"] is w


def test_named_buffers_include_non_persistent_ones():
    names = [n for n, _ in Net().named_buffers()]
    assert names == [
        "backbone.layer1.0.bn1.count",
        "backbone.layer1.0.bn1.running",
        "backbone.layer1.0.bn1.cache",
        "backbone.layer1.1.bn1.count",
        "backbone.layer1.1.bn1.running",
        "backbone.layer1.1.bn1.cache",
    ]


def test_named_parameters_prefix_and_recurse():
    m = Block(2, 0)
    assert [n for n, _ in m.named_parameters(prefix="enc")] == [
        "enc.conv1.w", "enc.conv1.b", "enc.bn1.scale", "enc.conv2.w", "enc.conv2.b",
    ]  # fmt: skip
    assert list(m.named_parameters(recurse=False)) == []
    assert [n for n, _ in m.bn1.named_parameters(recurse=False)] == ["scale"]


def test_named_modules_children_and_modules():
    net = Net()
    names = [n for n, _ in net.named_modules()]
    assert names == [
        "", "backbone", "backbone.stem", "backbone.layer1",
        "backbone.layer1.0", "backbone.layer1.0.conv1", "backbone.layer1.0.bn1", "backbone.layer1.0.conv2",
        "backbone.layer1.1", "backbone.layer1.1.conv1", "backbone.layer1.1.bn1", "backbone.layer1.1.conv2",
        "heads", "heads.cls", "aux", "aux.0",
    ]  # fmt: skip
    assert [n for n, _ in net.named_children()] == ["backbone", "heads", "aux"]
    assert list(net.children()) == [net.backbone, net.heads, net.aux]
    assert len(list(net.modules())) == len(names)


def test_shared_parameter_counted_once_but_saved_under_both_names():
    shared = Affine(4, 4)
    model = nn.Sequential(shared, Affine(4, 4, seed=1), shared)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.w", "0.b", "1.w", "1.b"]
    assert model.num_parameters() == 2 * (16 + 4)
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    assert list(model.state_dict()) == ["0.w", "0.b", "1.w", "1.b", "2.w", "2.b"]
    # A tied parameter (same Parameter under two modules) is also listed once.
    a, b = Affine(3, 3), Affine(3, 3, seed=1)
    b.w = a.w
    tied = nn.ModuleList([a, b])
    assert tied.num_parameters() == 9 + 3 + 3


def test_num_parameters_trainable_only():
    net = Block(3, 0)
    assert net.num_parameters() == 2 * (9 + 3) + 3
    net.conv1.requires_grad_(False)
    assert net.num_parameters(trainable_only=True) == 9 + 3 + 3
    assert all(not p.requires_grad for p in net.conv1.parameters())
    assert net.conv2.w.requires_grad


def test_get_submodule():
    net = Net()
    assert net.get_submodule("backbone.layer1.1.bn1") is net.backbone.layer1[1].bn1
    assert net.get_submodule("") is net
    with pytest.raises(AttributeError, match=r"backbone\.layer1 \(Sequential\) has no child '7'"):
        net.get_submodule("backbone.layer1.7.conv1")


# -- modes, gradients, apply --------------------------------------------------------------------------------
def test_train_and_eval_propagate_recursively():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.backbone.train()
    assert net.backbone.layer1[1].bn1.training and not net.heads.training and not net.training
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="mode must be a bool, got 'no'"):
        net.train("no")


def test_zero_grad_and_backward_through_module():
    m = Affine(3, 2)
    x = segcore.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    m(x).sum().backward()
    # d(sum(x @ w + b))/dw = x^T @ ones; /db = N.
    np.testing.assert_allclose(m.w.grad.numpy(), x.numpy().T @ np.ones((2, 2), np.float32))
    np.testing.assert_allclose(m.b.grad.numpy(), [2.0, 2.0])
    m.zero_grad(set_to_none=False)
    assert m.w.grad is not None and not m.w.grad.numpy().any()
    m.zero_grad()
    assert m.w.grad is None and m.b.grad is None


def test_apply_visits_children_first():
    net = Block(2, 0)
    seen = []
    assert net.apply(lambda mod: seen.append(type(mod).__name__)) is net
    assert seen == ["Affine", "Stats", "Affine", "Block"]


# -- load_state_dict ----------------------------------------------------------------------------------------
def test_load_state_dict_round_trip_copies_and_keeps_identity():
    src, dst = Net(), Net()
    for p in src.parameters():
        p.data = p.data + 1.0
    src.backbone.layer1[0].bn1.count.data = np.array(7, dtype=np.int64)
    dst_params = list(dst.parameters())
    result = dst.load_state_dict(src.state_dict())
    assert result == nn.IncompatibleKeys([], [])
    assert list(dst.parameters()) == dst_params and all(a is b for a, b in zip(dst.parameters(), dst_params))
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
        assert a.dtype == b.dtype
        assert a.data is not b.data  # copied, never aliased
    x = segcore.tensor(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32))
    np.testing.assert_array_equal(src(x).numpy(), dst(x).numpy())


def test_load_state_dict_accepts_numpy_arrays_and_casts_float_width():
    m = Affine(2, 2)
    w = np.arange(4, dtype=np.float64).reshape(2, 2)
    m.load_state_dict({"w": w, "b": np.array([1.0, 2.0])})
    assert m.w.dtype == np.float32
    np.testing.assert_array_equal(m.w.numpy(), w.astype(np.float32))
    w[0, 0] = 100.0  # the module holds a copy
    assert m.w.numpy()[0, 0] == 0.0


def test_strict_error_lists_missing_unexpected_and_shape_mismatches_together():
    net = Net()
    sd = net.state_dict()
    del sd["backbone.stem.b"]
    del sd["aux.0.w"]
    sd["heads.cls.w"] = segcore.tensor(np.zeros((5, 2), dtype=np.float32))
    sd["backbone.layer1.0.bn1.running"] = segcore.tensor(np.zeros(4, dtype=np.float32))
    sd["decoder.weight"] = segcore.tensor([1.0])
    sd["heads.box.b"] = segcore.tensor([1.0])
    with pytest.raises(ValueError) as err:
        net.load_state_dict(sd)
    message = str(err.value)
    assert message.startswith("Error(s) in loading state_dict for Net:")
    assert 'Missing key(s) in state_dict: "backbone.stem.b", "aux.0.w".' in message
    assert 'Unexpected key(s) in state_dict: "decoder.weight", "heads.box.b".' in message
    assert "size mismatch for heads.cls.w: copying a param with shape (5, 2) from checkpoint, " in message
    assert "the shape in current model is (3, 2)" in message
    assert "size mismatch for backbone.layer1.0.bn1.running: copying a param with shape (4,)" in message
    assert message.index("Missing") < message.index("Unexpected") < message.index("size mismatch")


def test_non_strict_returns_incompatible_keys_and_loads_the_rest():
    m = Block(2, 0)
    other = Block(2, 5)
    sd = other.state_dict()
    del sd["conv2.b"]
    sd["extra"] = segcore.tensor([0.0])
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["conv2.b"] and unexpected == ["extra"]
    np.testing.assert_array_equal(m.conv2.w.numpy(), other.conv2.w.numpy())
    assert not np.array_equal(m.conv2.b.numpy(), other.conv2.b.numpy())


def test_shape_mismatch_is_an_error_even_when_not_strict():
    m = Affine(2, 2)
    with pytest.raises(ValueError, match="size mismatch for b"):
        m.load_state_dict({"b": np.zeros(3, np.float32)}, strict=False)


def test_dtype_kind_mismatch_and_bad_values_are_errors():
    m = Stats(2)
    sd = m.state_dict()
    sd["count"] = segcore.tensor(np.array(1.5))
    with pytest.raises(ValueError, match="dtype mismatch for count: checkpoint has float64, the model has int64"):
        m.load_state_dict(sd)
    with pytest.raises(TypeError, match=r"state_dict\['scale'\] must be a Tensor or a numpy array, got list"):
        m.load_state_dict({"scale": [1.0, 1.0]}, strict=False)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        m.load_state_dict([("scale", 1)])
    with pytest.raises(TypeError, match="keys must be str, got 3"):
        m.load_state_dict({3: np.zeros(2)})


# -- moving between backends and dtypes ---------------------------------------------------------------------
def test_to_backend_moves_in_place_and_keeps_identity(alt_backend):
    net = Net()
    x_np = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    expected = net(segcore.tensor(x_np)).numpy()
    held = list(net.parameters())  # what an optimizer built before .to would hold
    buffers = list(net.buffers())
    net(segcore.tensor(x_np)).sum().backward()
    grad_before = net.backbone.stem.w.grad.numpy()
    assert net.to("numpy-nn-alt") is net
    assert all(a is b for a, b in zip(net.parameters(), held))
    assert all(a is b for a, b in zip(net.buffers(), buffers))
    assert all(p.backend is alt_backend for p in held)
    assert all(b.backend is alt_backend for b in buffers)
    assert net.backbone.stem.w.grad.backend is alt_backend
    np.testing.assert_array_equal(net.backbone.stem.w.grad.numpy(), grad_before)
    out = net(segcore.tensor(x_np, backend="numpy-nn-alt"))
    assert out.backend is alt_backend
    np.testing.assert_array_equal(out.numpy(), expected)
    with pytest.raises(BackendMismatchError):
        net(segcore.tensor(x_np))
    net.to("numpy")
    assert all(p.backend.name == "numpy" for p in held)


def test_to_dtype_casts_floating_state_only():
    m = Stats(2)
    m.to(dtype=np.float64)
    assert m.scale.dtype == np.float64 and m.running.dtype == np.float64 and m.cache.dtype == np.float64
    assert m.count.dtype == np.int64
    assert m.float().scale.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point dtype, got int32"):
        m.to(dtype=np.int32)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        m.to("nope")


# -- repr ---------------------------------------------------------------------------------------------------
def test_repr_is_nested_like_torch():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(Affine(2, 2), nn.Identity())
            self.k = 3

        def extra_repr(self):
            return f"k={self.k}"

    assert repr(Scaled()) == (
        "Scaled(\n"
        "  k=3\n"
        "  (inner): Sequential(\n"
        "    (0): Affine()\n"
        "    (1): Identity()\n"
        "  )\n"
        ")"
    )


# -- containers ---------------------------------------------------------------------------------------------
def test_sequential_indexing_iteration_and_forward():
    a, b, c = Affine(2, 3, 0), Affine(3, 3, 1), Affine(3, 1, 2)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    assert list(seq[1:].state_dict()) == ["1.w", "1.b", "2.w", "2.b"]
    x = segcore.tensor(np.ones((1, 2), dtype=np.float32))
    expected = (x.numpy() @ a.w.numpy() + a.b.numpy()) @ b.w.numpy() + b.b.numpy()
    expected = expected @ c.w.numpy() + c.b.numpy()
    np.testing.assert_allclose(seq(x).numpy(), expected, rtol=1e-6)
    with pytest.raises(IndexError, match="index 3 is out of range for Sequential of length 3"):
        seq[3]
    with pytest.raises(TypeError, match="indices must be integers or slices, got str"):
        seq["0"]
    del seq[0]
    assert list(seq._modules) == ["0", "1"] and seq[0] is b
    seq.append(a)
    assert seq[2] is a
    seq[0] = c
    assert seq[0] is c and list(seq._modules) == ["0", "1", "2"]
    with pytest.raises(TypeError, match="Sequential argument 1 must be a Module, got int"):
        nn.Sequential(a, 3)


def test_sequential_from_ordered_dict_uses_names():
    seq = nn.Sequential(OrderedDict([("conv", Affine(2, 2)), ("act", nn.Identity())]))
    assert list(seq.state_dict()) == ["conv.w", "conv.b"]
    assert seq.act is seq[1]


def test_module_list_operations():
    mods = [Affine(1, 1, s) for s in range(4)]
    ml = nn.ModuleList(mods[:2])
    ml.append(mods[2])
    ml.insert(0, mods[3])
    assert list(ml) == [mods[3], mods[0], mods[1], mods[2]]
    assert list(ml.state_dict())[:4] == ["0.w", "0.b", "1.w", "1.b"]
    assert ml[0].w is mods[3].w
    assert ml[-1] is mods[2] and list(ml[1:3]) == mods[:2]
    del ml[0]
    assert list(ml) == mods[:3] and list(ml._modules) == ["0", "1", "2"]
    ml.extend([mods[3]])
    ml += [Affine(1, 1)]
    assert len(ml) == 5
    ml[1] = mods[0]
    assert ml[1] is mods[0]
    with pytest.raises(TypeError, match="ModuleList.insert expects a Module, got int"):
        ml.insert(0, 1)
    with pytest.raises(NotImplementedError):
        ml(1)


def test_module_dict_operations():
    a, b = Affine(1, 1), Affine(1, 1, 1)
    md = nn.ModuleDict([("a", a)])
    md["b"] = b
    assert list(md) == ["a", "b"] and list(md.keys()) == ["a", "b"]
    assert list(md.values()) == [a, b] and dict(md.items()) == {"a": a, "b": b}
    assert "a" in md and len(md) == 2
    assert md.pop("a") is a and list(md) == ["b"]
    with pytest.raises(KeyError, match="ModuleDict has no key 'zz'; keys: b"):
        md["zz"]
    md.update({"c": a})
    assert list(md.state_dict()) == ["b.w", "b.b", "c.w", "c.b"]
    md.clear()
    assert len(md) == 0


def test_identity_accepts_and_ignores_arguments():
    x = segcore.tensor([1.0])
    assert nn.Identity(54, unused="yes")(x) is x
