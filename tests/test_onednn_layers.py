"""The oneDNN layers (packages/dqn-mlx-onednn) compute MLX's plain layers, gradients included.

Every layer shape of both architectures is checked against ``mx.conv2d`` / ``x @ W.T + b``
(then ReLU) in MLX's layouts: values, and the gradients of input, weight and bias, eagerly and
under ``mx.compile``. On Linux x86-64 the extension is part of the install (the ``cpu`` group),
so a failed build fails these tests; elsewhere there is nothing to test.
"""

from __future__ import annotations

import platform
import sys

import mlx.core as mx
import numpy as np
import pytest

from dqn_mlx.core.network import ARCHITECTURES, FRAME_SIZE

if not (sys.platform == "linux" and platform.machine() == "x86_64"):
    pytest.skip("the oneDNN layers are built on Linux x86-64 only", allow_module_level=True)

import dqn_mlx_onednn as onednn


def _conv_layers() -> list[tuple[str, int, int, int, int, int]]:
    """(architecture, in channels, size, filters, kernel, stride) of every conv layer."""
    layers = []
    for name, (convs, _) in ARCHITECTURES.items():
        channels, size = 4, FRAME_SIZE
        for filters, kernel, stride in convs:
            layers.append((name, channels, size, filters, kernel, stride))
            channels, size = filters, (size - kernel) // stride + 1
    return layers


def _linear_layers() -> list[tuple[str, int, int]]:
    layers = []
    for name, (convs, hidden) in ARCHITECTURES.items():
        size = FRAME_SIZE
        for _, kernel, stride in convs:
            size = (size - kernel) // stride + 1
        layers += [(name, convs[-1][0] * size * size, hidden), (name, hidden, 6)]
    return layers


def _random(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> mx.array:
    return mx.array((scale * rng.standard_normal(shape)).astype(np.float32))


def _close(ours: mx.array, plain: mx.array) -> None:
    """Equal up to float32 rounding of sums in another order, relative to the result's size."""
    tolerance = 2e-5 * max(1.0, float(mx.abs(plain).max()))
    np.testing.assert_allclose(np.array(ours), np.array(plain), rtol=1e-4, atol=tolerance)


def _plain_conv(x, w, b, stride, relu):
    y = mx.conv2d(x, w, stride=stride) + b
    return mx.maximum(y, 0) if relu else y


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize(
    ("arch", "channels", "size", "filters", "kernel", "stride"), _conv_layers()
)
def test_conv2d_equals_mlx_conv_with_gradients(
    arch, channels, size, filters, kernel, stride, compiled
):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = _random(rng, (5, size, size, channels))
    w, b = _random(rng, (filters, kernel, kernel, channels), 0.1), _random(rng, (filters,), 0.1)
    cotangent = _random(
        rng, (5, (size - kernel) // stride + 1, (size - kernel) // stride + 1, filters)
    )

    def loss(layer):
        def f(x, w, b):
            return (layer(x, w, b, stride, True) * cotangent).sum()

        grad = mx.value_and_grad(f, argnums=(0, 1, 2))
        return mx.compile(grad) if compiled else grad

    (plain_value, plain_grads), (our_value, our_grads) = (
        loss(_plain_conv)(x, w, b),
        loss(onednn.conv2d)(x, w, b),
    )
    _close(onednn.conv2d(x, w, b, stride, True), _plain_conv(x, w, b, stride, True))
    _close(onednn.conv2d(x, w, b, stride, False), _plain_conv(x, w, b, stride, False))
    _close(our_value, plain_value)
    for ours, plain in zip(our_grads, plain_grads, strict=True):
        _close(ours, plain)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_input_layer_reads_the_uint8_frames_as_pixels_over_255(arch):
    """The first layer takes (batch, history, 84, 84) uint8 as the replay stores it, with
    values above 127 (a signed cast would wrap them)."""
    (filters, kernel, stride), *_ = ARCHITECTURES[arch][0]
    rng = np.random.default_rng(1)
    frames = mx.array(rng.integers(0, 256, (6, 4, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8))
    w, b = _random(rng, (filters, kernel, kernel, 4), 0.1), _random(rng, (filters,), 0.1)
    out = (FRAME_SIZE - kernel) // stride + 1
    cotangent = _random(rng, (6, out, out, filters))

    def plain(w, b):
        x = frames.transpose(0, 2, 3, 1).astype(mx.float32) / 255.0
        return (_plain_conv(x, w, b, stride, True) * cotangent).sum()

    def ours(w, b):
        return (onednn.conv2d(frames, w, b, stride, True) * cotangent).sum()

    for compiled in (False, True):
        grads = [mx.value_and_grad(f, argnums=(0, 1)) for f in (plain, ours)]
        if compiled:
            grads = [mx.compile(g) for g in grads]
        (pv, pg), (ov, og) = (g(w, b) for g in grads)
        _close(ov, pv)
        for o, p in zip(og, pg, strict=True):
            _close(o, p)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize(("arch", "inputs", "outputs"), _linear_layers())
def test_linear_equals_mlx_linear_with_gradients(arch, inputs, outputs, relu):
    rng = np.random.default_rng(inputs + outputs)
    x, w, b = (
        _random(rng, (7, inputs)),
        _random(rng, (outputs, inputs), 0.05),
        _random(rng, (outputs,)),
    )
    cotangent = _random(rng, (7, outputs))

    def plain(x, w, b):
        y = x @ w.T + b
        return ((mx.maximum(y, 0) if relu else y) * cotangent).sum()

    def ours(x, w, b):
        return (onednn.linear(x, w, b, relu) * cotangent).sum()

    for compiled in (False, True):
        grads = [mx.value_and_grad(f, argnums=(0, 1, 2)) for f in (plain, ours)]
        if compiled:
            grads = [mx.compile(g) for g in grads]
        (pv, pg), (ov, og) = (g(x, w, b) for g in grads)
        _close(ov, pv)
        for o, p in zip(og, pg, strict=True):
            _close(o, p)


@pytest.mark.parametrize("optimizer", ["adam", "centered_rmsprop"])
@pytest.mark.parametrize("compiled", [False, True])
def test_optimizer_steps_equal_mlx_optimizers(optimizer, compiled):
    """Five steps from MLX's broadcast zeros state, parameters of every size the networks have
    (a scalar-sized bias to the 1.6M-number hidden weight): the same parameters and state."""
    import mlx.optimizers as optim

    from dqn_mlx.accel.onednn import OnednnAdam, OnednnCenteredRMSProp
    from dqn_mlx.core.learner import CenteredRMSProp

    plain_cls, fused_cls, kwargs = {
        "adam": (optim.Adam, OnednnAdam, {"learning_rate": 1e-3, "bias_correction": True}),
        "centered_rmsprop": (
            CenteredRMSProp,
            OnednnCenteredRMSProp,
            {"learning_rate": 2.5e-4, "grad_decay": 0.95, "sq_decay": 0.95, "min_sq": 0.01},
        ),
    }[optimizer]
    rng = np.random.default_rng(3)
    shapes = {"bias": (6,), "weight": (512, 3136), "conv": (32, 8, 8, 4)}
    start = {k: _random(rng, shape) for k, shape in shapes.items()}
    params = [dict(start), dict(start)]
    optimizers = [plain_cls(**kwargs), fused_cls(**kwargs)]
    steps = [lambda g, p, o=o: o.apply_gradients(g, p) for o in optimizers]
    if compiled:
        steps = [
            mx.compile(step, inputs=o.state, outputs=o.state)
            for step, o in zip(steps, optimizers, strict=True)
        ]
    for _ in range(5):
        grads = {k: _random(rng, shape, 0.1) for k, shape in shapes.items()}
        params = [step(grads, p) for step, p in zip(steps, params, strict=True)]
        mx.eval(params, [o.state for o in optimizers])
    for name in shapes:
        _close(params[1][name], params[0][name])
        assert float(mx.abs(params[1][name] - start[name]).max()) > 1e-4  # they did move
    for key in optimizers[0].state[next(iter(shapes))]:
        for name in shapes:
            _close(optimizers[1].state[name][key], optimizers[0].state[name][key])


SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)  # 2^-126


@pytest.mark.parametrize("optimizer", ["adam", "centered_rmsprop"])
def test_optimizer_steps_read_subnormal_moments_as_zero(optimizer):
    """A moment whose gradient stopped decays into the subnormal floats and stays there (Adam's
    first moment at 4 * 2^-149); the steps read and write those as zero. One step on two
    OpenMP threads from a state of three kinds: zero moments and gradients; subnormal moments
    with zero or subnormal gradients; normal moments and gradients. Where the moments are zero
    or subnormal, each parameter (all far above 2^-74) is exactly MLX's, and the new moments
    are zero where MLX's are subnormal. Elsewhere each parameter is within two rounding steps
    of MLX's, for steps a hundred rounding steps long, and the moments agree to float32
    rounding. Afterwards subnormal arithmetic is back on every thread: MLX's own on its CPU
    stream, and a oneDNN product over both OpenMP threads."""
    import mlx.optimizers as optim

    from dqn_mlx.accel.onednn import OnednnAdam, OnednnCenteredRMSProp
    from dqn_mlx.core.learner import CenteredRMSProp

    plain_cls, fused_cls, kwargs, keys = {
        "adam": (optim.Adam, OnednnAdam, {"learning_rate": 1e-4}, ("m", "v")),
        "centered_rmsprop": (
            CenteredRMSProp,
            OnednnCenteredRMSProp,
            {"learning_rate": 2.5e-4, "grad_decay": 0.95, "sq_decay": 0.95, "min_sq": 0.01},
            ("g", "g2"),
        ),
    }[optimizer]
    rng = np.random.default_rng(5)
    size = 3 * 16384  # two threads' worth (optimizers.cpp: 16,384 numbers or more a thread)
    kinds = np.repeat([0, 1, 2], size // 3)  # zero, subnormal, normal
    subnormals = np.float32(2.0**-149) * rng.integers(1, 2**20, size).astype(np.float32)
    normal = np.abs(rng.standard_normal(size)).astype(np.float32)

    def mixed(normal_scale: float) -> np.ndarray:
        return np.choose(kinds, [np.zeros(size, np.float32), subnormals, normal_scale * normal])

    p = rng.standard_normal(size).astype(np.float32)
    gradient = np.where(kinds == 2, mixed(0.1), 0).astype(np.float32)
    gradient[size // 3 : size // 3 + 64] = subnormals[:64]  # a few subnormal gradients
    state = {keys[0]: mx.array(mixed(1e-3)), keys[1]: mx.array(mixed(1e-4))}
    results = []
    threads_before = onednn.num_threads()
    onednn.set_num_threads(2)
    try:
        for cls in (plain_cls, fused_cls):
            opt = cls(**kwargs)
            opt.init({"w": mx.array(p)})
            opt.state["w"].update(dict(state))
            new = opt.apply_gradients({"w": mx.array(gradient)}, {"w": mx.array(p)})["w"]
            mx.eval(new, opt.state)
            results.append((np.array(new), {k: np.array(opt.state["w"][k]) for k in keys}))
        tiny = mx.full((1024, 256), 2.0**-70)  # each output 256 * 2^-140 = 2^-132, subnormal
        product = np.array(onednn.linear(tiny, tiny[:256], mx.zeros((256,)), False))
    finally:
        onednn.set_num_threads(threads_before)
    (plain_p, plain_s), (ours_p, ours_s) = results
    flushed, normal_kind = kinds < 2, kinds == 2
    assert np.abs(p[flushed]).min() > 2.0**-74
    np.testing.assert_array_equal(ours_p[flushed], plain_p[flushed])
    for key in keys:
        mlx_moment = plain_s[key][kinds == 1]
        assert 0 < np.abs(mlx_moment).max() < SMALLEST_NORMAL  # MLX's stay subnormal...
        assert np.all(ours_s[key][flushed] == 0)  # ... ours are zero
        np.testing.assert_allclose(
            ours_s[key][normal_kind], plain_s[key][normal_kind], rtol=1e-6, atol=0
        )
    rounding_step = np.spacing(np.abs(plain_p[normal_kind]))
    assert np.all(np.abs(ours_p - plain_p)[normal_kind] <= 2 * rounding_step)
    assert np.median(np.abs(plain_p - p)[normal_kind] / rounding_step) > 100  # real steps
    half_of_smallest = mx.array(np.float32(SMALLEST_NORMAL)) * 0.5
    assert float(half_of_smallest) == SMALLEST_NORMAL / 2
    np.testing.assert_array_equal(product, np.float32(2.0**-132))


def test_layers_read_broadcast_inputs_as_their_values():
    """A broadcast (the ones of a sum's gradient, zeros_like) has one number for many
    positions: the layers read it as the full array."""
    rng = np.random.default_rng(4)
    x, w, b = _random(rng, (3, 10, 10, 4)), _random(rng, (8, 3, 3, 4)), mx.zeros((8,))
    grads = [
        mx.grad(lambda x, w, layer=layer: layer(x, w, b, 1, False).sum(), argnums=(0, 1))(x, w)
        for layer in (_plain_conv, onednn.conv2d)
    ]
    for plain, ours in zip(*grads, strict=True):
        _close(ours, plain)
    ones = mx.ones((4, 10, 10, 4))
    _close(onednn.conv2d(ones, w, b, 1, True), _plain_conv(ones, w, b, 1, True))


def test_layers_read_strided_views_as_their_values():
    """A transposed or sliced input is read by value, not by its buffer's order."""
    rng = np.random.default_rng(2)
    base = _random(rng, (4, 12, 12, 8))
    view = base.transpose(0, 2, 1, 3)[:, 1:, 1:, :]
    w, b = _random(rng, (16, 3, 3, 8)), _random(rng, (16,))
    _close(onednn.conv2d(view, w, b, 1, True), _plain_conv(view, w, b, 1, True))
    x, wl = _random(rng, (20, 6)).T, _random(rng, (5, 20))
    _close(onednn.linear(x, wl, b[:5], False), x @ wl.T + b[:5])


def test_wrong_shapes_are_refused_in_one_line():
    x, w, b = mx.zeros((2, 10, 10, 3)), mx.zeros((4, 3, 3, 5)), mx.zeros((4,))
    with pytest.raises(ValueError, match="channels"):
        onednn.conv2d(x, w, b, 1, True)
    with pytest.raises(ValueError, match="shapes"):
        onednn.linear(mx.zeros((2, 7)), mx.zeros((3, 6)), mx.zeros((3,)), True)


def test_built_against_the_mlx_that_runs():
    assert mx.__version__.startswith(onednn.MLX_VERSION)


def test_thread_count_is_kept():
    before = onednn.num_threads()
    try:
        onednn.set_num_threads(1)
        assert onednn.num_threads() == 1
        x, w, b = mx.ones((2, 9, 9, 2)), mx.ones((3, 3, 3, 2)), mx.zeros((3,))
        assert float(onednn.conv2d(x, w, b, 2, False)[0, 0, 0, 0]) == 18.0
    finally:
        onednn.set_num_threads(before)
