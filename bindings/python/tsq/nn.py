"""Layers, sequential networks, training and network-level TSQ
(include/tsq/nn.h), and model files (include/tsq/model.h)."""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List,  # noqa: F401
                    Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401
    from .quantizer import Quantizer  # noqa: F401

import collections
import ctypes
import os
import weakref

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike, DTypeLike  # noqa: F401
from ._base import Handle, check_static
from ._call import Call
from ._lib import lib
from .regressor import HISTORY_SERIES, Regressor
from .tensor import Tensor

__all__ = ["Layer", "Dense", "Conv2d", "BatchNorm", "ReLU", "MaxPool2d", "GlobalAvgPool",
           "Flatten", "ActQuant", "LowbitDense", "LowbitConv2d", "Net", "Param",
           "StepResult", "EvalResult", "TsqProgress", "softmax_cross_entropy",
           "layer_kind_name"]

Param = collections.namedtuple("Param", "name value grad layer_index")
Param.__doc__ = """A trainable parameter: its name ("weight", "bias", ...), value
and gradient Tensors (borrowed: valid while the net's layer list is not
changed) and the index of its layer (None for a standalone layer)."""

StepResult = collections.namedtuple("StepResult", "loss correct")
StepResult.__doc__ = """Mean cross-entropy of the batch and the number of
argmax hits (before the update for train_step)."""

EvalResult = collections.namedtuple("EvalResult", "loss correct predictions")
EvalResult.__doc__ = """evaluate(): mean loss and hits (None without labels)
and the argmax prediction of every sample (int32 array, or None)."""

TsqProgress = collections.namedtuple("TsqProgress", "stage unit units passes")
TsqProgress.__doc__ = """A network-level TSQ session: stage ("idle",
"learning", "fitting"), the layer being fitted among `units`, its passes."""

_OPTIONS = {"trainable": _ffi.TSQ_LAYER_OPT_TRAINABLE,
            "bn_momentum": _ffi.TSQ_LAYER_OPT_BN_MOMENTUM,
            "bn_eps": _ffi.TSQ_LAYER_OPT_BN_EPS,
            "bn_frozen": _ffi.TSQ_LAYER_OPT_BN_FROZEN,
            "aq_output_codes": _ffi.TSQ_LAYER_OPT_AQ_OUTPUT_CODES,
            "tsq_select": _ffi.TSQ_LAYER_OPT_TSQ_SELECT}
_INFO = {"in_channels": _ffi.TSQ_LAYER_INFO_IN_CHANNELS,
         "out_channels": _ffi.TSQ_LAYER_INFO_OUT_CHANNELS,
         "kernel_h": _ffi.TSQ_LAYER_INFO_KERNEL_H, "kernel_w": _ffi.TSQ_LAYER_INFO_KERNEL_W,
         "stride": _ffi.TSQ_LAYER_INFO_STRIDE, "pad": _ffi.TSQ_LAYER_INFO_PAD,
         "weight_bits": _ffi.TSQ_LAYER_INFO_WEIGHT_BITS, "bits": _ffi.TSQ_LAYER_INFO_BITS}
_TSQ_OPTIONS = {"act_bits": _ffi.TSQ_NET_TSQ_ACT_BITS,
                "per_channel": _ffi.TSQ_NET_TSQ_PER_CHANNEL,
                "eps_mode": _ffi.TSQ_NET_TSQ_EPS_MODE, "eps": _ffi.TSQ_NET_TSQ_EPS,
                "sparsity": _ffi.TSQ_NET_TSQ_SPARSITY, "positions": _ffi.TSQ_NET_TSQ_POSITIONS}
_SCHEDULES = {"constant": _ffi.TSQ_LR_CONSTANT, "step": _ffi.TSQ_LR_STEP,
              "cosine": _ffi.TSQ_LR_COSINE}
_STAGES = {_ffi.TSQ_NET_TSQ_IDLE: "idle", _ffi.TSQ_NET_TSQ_LEARNING: "learning",
           _ffi.TSQ_NET_TSQ_FITTING: "fitting"}


def _lookup(table, key, what):
    if isinstance(key, str):
        try:
            return table[key]
        except KeyError:
            raise ValueError("unknown %s %r (known: %s)" % (what, key, ", ".join(sorted(table))))
    return B.int_arg(key, "key")


def _kernel_hw(kernel):
    if isinstance(kernel, (tuple, list)):
        return B.int_arg(kernel[0], "kernel"), B.int_arg(kernel[1], "kernel")
    return B.int_arg(kernel, "kernel"), B.int_arg(kernel, "kernel")


def layer_kind_name(kind: Union[str, int]) -> str:
    """The name of a TSQ_LAYER_* kind ("dense", "conv2d", ...)."""
    return lib.tsq_layer_kind_name(B.int_arg(kind, "kind")).decode()


class Layer(Handle):
    """A layer (tsq_layer). Made by the subclasses' constructors; owned by
    the Python object until appended to a Net, which then owns it (the
    Python object stays usable as a view while the layer is in the net).

    Parameters and states are borrowed Tensors; ``params()`` lists them."""

    _destroy_name = "tsq_layer_destroy"
    _errmsg_name = "tsq_layer_errmsg"
    _net = None

    def _create(self, ctx, name, *args):
        """Runs tsq_layer_<name>_create(ctx, *args, &out) and owns the result."""
        out = ctypes.POINTER(_ffi.tsq_layer)()
        fn = "tsq_layer_%s_create" % name
        ctx._check(getattr(lib, fn)(ctx.handle, *(args + (ctypes.byref(out),))), fn)
        self._adopt(ctx, out)
        self._net = None

    @classmethod
    def _view(cls, ctx, ptr, net):
        layer = cls._new_borrowed(ctx, ptr, net)
        layer._net = weakref.ref(net)
        return layer

    @property
    def kind(self):
        """The TSQ_LAYER_* kind number."""
        v = ctypes.c_int32()
        self._call("tsq_layer_kind", ctypes.byref(v))
        return v.value

    @property
    def kind_name(self):
        """The kind's name ("dense", "conv2d", "act_quant"...)."""
        return layer_kind_name(self.kind)

    def info(self, key: Union[str, int]) -> Any:
        """A configuration value: "in_channels", "out_channels", "kernel_h",
        "kernel_w", "stride", "pad", "weight_bits", "bits" (or a number)."""
        v = ctypes.c_int64()
        self._call("tsq_layer_info", _lookup(_INFO, key, "layer info key"), ctypes.byref(v))
        return v.value

    @property
    def sample_shapes(self):
        """(input sample shape, output sample shape), once in a net."""
        cap = 4
        ins, outs = (ctypes.c_int64 * cap)(), (ctypes.c_int64 * cap)()
        ni, no = ctypes.c_int32(), ctypes.c_int32()
        self._call("tsq_layer_sample_shapes", ins, ctypes.byref(ni), outs, ctypes.byref(no),
                   cap)
        return tuple(ins[:ni.value]), tuple(outs[:no.value])

    def set_option(self, key: Union[str, int], value: float) -> "Layer":
        """Sets an option: "trainable", "bn_momentum", "bn_eps", "bn_frozen",
        "aq_output_codes", "tsq_select" (or a TSQ_LAYER_OPT_* number)."""
        self._call("tsq_layer_set_option", _lookup(_OPTIONS, key, "layer option"),
                   B.real_arg(value, "value"))
        return self

    def get_option(self, key: Union[str, int]) -> float:
        """Reads an option (a float)."""
        v = ctypes.c_double()
        self._call("tsq_layer_get_option", _lookup(_OPTIONS, key, "layer option"),
                   ctypes.byref(v))
        return v.value

    @staticmethod
    def option_bounds(key: Union[str, int]) -> Any:
        """The inclusive (lo, hi) range of an option."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_layer_option_bounds(_lookup(_OPTIONS, key, "layer option"),
                                                 ctypes.byref(lo), ctypes.byref(hi)),
                     "tsq_layer_option_bounds")
        return lo.value, hi.value

    @property
    def trainable(self):
        """Whether the built-in optimisers update this layer."""
        return bool(self.get_option("trainable"))

    @trainable.setter
    def trainable(self, v):
        self.set_option("trainable", 1 if v else 0)

    def _layer_index(self):
        net = self._net() if self._net is not None else None
        if net is None:
            return None
        addrs = net._layer_addresses()
        a = ctypes.addressof(self.handle.contents)
        return addrs.index(a) if a in addrs else None

    def params(self) -> List[Param]:
        """The trainable parameters, as Param(name, value, grad, layer_index)."""
        n = ctypes.c_int32()
        self._call("tsq_layer_param_count", ctypes.byref(n))
        out = []
        index = self._layer_index()
        for i in range(n.value):
            v = ctypes.POINTER(_ffi.tsq_tensor)()
            g = ctypes.POINTER(_ffi.tsq_tensor)()
            name = ctypes.c_char_p()
            self._call("tsq_layer_param", i, ctypes.byref(v), ctypes.byref(g),
                       ctypes.byref(name))
            out.append(Param(name.value.decode(), Tensor._view(self._ctx, v, self),
                             Tensor._view(self._ctx, g, self) if g else None, index))
        return out

    def param(self, name: str) -> Any:
        """The Param called `name` ("weight", "bias", "gamma", ...)."""
        for p in self.params():
            if p.name == name:
                return p
        raise KeyError("layer %s has no parameter %r" % (self.kind_name, name))

    def states(self) -> Dict[str, Tensor]:
        """The non-trainable tensors by name ("running_mean", "running_var",
        "weight_codes"), borrowed."""
        n = ctypes.c_int32()
        self._call("tsq_layer_state_count", ctypes.byref(n))
        out = collections.OrderedDict()
        for i in range(n.value):
            v = ctypes.POINTER(_ffi.tsq_tensor)()
            name = ctypes.c_char_p()
            self._call("tsq_layer_state", i, ctypes.byref(v), ctypes.byref(name))
            out[name.value.decode()] = Tensor._view(self._ctx, v, self)
        return out

    def _describe(self):
        """The configuration that matters, for repr."""
        kind = self.kind_name
        try:
            if kind in ("dense", "lowbit_dense"):
                d = "%d -> %d" % (self.info("in_channels"), self.info("out_channels"))
            elif kind in ("conv2d", "lowbit_conv2d"):
                d = "%d -> %d, %dx%d, stride %d, pad %d" % (
                    self.info("in_channels"), self.info("out_channels"), self.info("kernel_h"),
                    self.info("kernel_w"), self.info("stride"), self.info("pad"))
            elif kind == "batchnorm":
                d = "%d channels" % self.info("in_channels")
            elif kind == "maxpool2d":
                d = "%dx%d, stride %d" % (self.info("kernel_h"), self.info("kernel_h"),
                                          self.info("stride"))
            elif kind == "act_quant":
                n, bits, eps, delta = self.get_channel(0)
                d = "%d-bit, %s, %s" % (bits, "eps=%.4g delta=%.4g" % (eps, delta) if not n
                                        else "%d channels" % n,
                                        "codes" if self.output_codes else "values")
            else:
                d = ""
            if kind.startswith("lowbit"):
                d += ", %d-bit weights" % self.info("weight_bits")
        except Exception:               # pragma: no cover - a repr must not raise
            d = ""
        return kind + (" " + d if d else "")

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.%s closed>" % type(self).__name__
        return "<tsq.%s %s%s>" % (type(self).__name__, self._describe(),
                                  "" if self.owned else " (in a net)")


class Dense(Layer):
    """Fully connected y = W x + b, W (out, in), He-normal initialisation."""

    def __init__(self, ctx: Context, in_features: int, out_features: int) -> None:
        self._create(ctx, "dense", B.int_arg(in_features, "in_features"),
                     B.int_arg(out_features, "out_features"))


class Conv2d(Layer):
    """2-D convolution with bias: cin -> cout channels, kernel (int or
    (kh, kw)), one stride and zero padding for both directions."""

    def __init__(self, ctx: Context, cin: int, cout: int, kernel: Union[int, Tuple[int, int]],
                 stride: int = 1, pad: int = 0) -> None:
        kh, kw = _kernel_hw(kernel)
        self._create(ctx, "conv2d", B.int_arg(cin, "cin"), B.int_arg(cout, "cout"), kh, kw,
                     B.int_arg(stride, "stride"), B.int_arg(pad, "pad"))


class BatchNorm(Layer):
    """Batch normalisation over `channels` (1-d or 2-d by the input)."""

    def __init__(self, ctx: Context, channels: int) -> None:
        self._create(ctx, "batchnorm", B.int_arg(channels, "channels"))


class ReLU(Layer):
    """y = max(x, 0)."""

    def __init__(self, ctx: Context) -> None:
        self._create(ctx, "relu")


class MaxPool2d(Layer):
    """Max over k x k windows moved by stride (default k), no padding."""

    def __init__(self, ctx: Context, k: int, stride: Optional[int] = None) -> None:
        self._create(ctx, "maxpool2d", B.int_arg(k, "k"),
                     B.int_arg(k if stride is None else stride, "stride"))


class GlobalAvgPool(Layer):
    """(C, H, W) -> (C): the mean over positions."""

    def __init__(self, ctx: Context) -> None:
        self._create(ctx, "global_avgpool")


class Flatten(Layer):
    """Any sample shape -> a vector (element order kept)."""

    def __init__(self, ctx: Context) -> None:
        self._create(ctx, "flatten")


class ActQuant(Layer):
    """The sparse activation quantizer of TSQ step 1 as a layer (per
    tensor: bits, eps, delta; per channel via set_channel). Outputs k*delta,
    or the codes k with option aq_output_codes = 1."""

    def __init__(self, ctx: Context, bits: int = 2, eps: float = 0.0, delta: float = 1.0) -> None:
        self._create(ctx, "act_quant", B.int_arg(bits, "bits"), B.real_arg(eps, "eps"),
                     B.real_arg(delta, "delta"))

    @classmethod
    def from_quantizer(cls, ctx: Context, quantizer: Quantizer) -> "ActQuant":
        """A quantizer layer with a fitted Quantizer's parameters."""
        out = ctypes.POINTER(_ffi.tsq_layer)()
        ctx._check(lib.tsq_layer_act_quant_create_from(ctx.handle, quantizer,
                                                       ctypes.byref(out)),
                   "tsq_layer_act_quant_create_from")
        layer = cls.__new__(cls)
        layer._adopt(ctx, out)
        layer._net = None
        return layer

    def set_channel(self, channel: int, nchannels: int, bits: int, eps: float,
                    delta: float) -> "ActQuant":
        """Sets (bits, eps, delta) of one channel (channel -1: per tensor;
        channel >= 0 makes the layer per-channel over nchannels)."""
        self._call("tsq_layer_act_quant_set_channel", B.int_arg(channel, "channel"),
                   B.int_arg(nchannels, "nchannels"), B.int_arg(bits, "bits"),
                   B.real_arg(eps, "eps"), B.real_arg(delta, "delta"))
        return self

    def get_channel(self, channel: int = -1) -> Tuple:
        """(nchannels, bits, eps, delta) of a channel (nchannels 0: per tensor)."""
        n, b = ctypes.c_int64(), ctypes.c_int32()
        e, d = ctypes.c_float(), ctypes.c_float()
        self._call("tsq_layer_act_quant_get_channel", B.int_arg(channel, "channel"),
                   ctypes.byref(n),
                   ctypes.byref(b), ctypes.byref(e), ctypes.byref(d))
        return n.value, b.value, e.value, d.value

    @property
    def output_codes(self):
        """True when the layer outputs codes k instead of k * delta."""
        return bool(self.get_option("aq_output_codes"))

    @output_codes.setter
    def output_codes(self, v):
        self.set_option("aq_output_codes", 1 if v else 0)


class _Lowbit(Layer):
    def weight_shape(self) -> Tuple[int, ...]:
        """The one shape set() takes for the codes: (out, in) for a dense
        layer, (cout, cin, kh, kw) for a convolution (outputs first, as the
        layer's "weight" parameter)."""
        if self.kind == _ffi.TSQ_LAYER_LOWBIT_DENSE:
            return (self.info("out_channels"), self.info("in_channels"))
        return (self.info("out_channels"), self.info("in_channels"), self.info("kernel_h"),
                self.info("kernel_w"))

    def set(self, codes: ArrayLike, alpha: ArrayLike,
            bias: Optional[ArrayLike] = None) -> "_Lowbit":
        """Sets the weight codes, the scales alpha (> 0) and the offsets
        (None for 0) and resets the shadow weights to alpha * codes.

        codes: exactly weight_shape(), (out, in) or (cout, cin, kh, kw),
        int8 or integer-valued data in -m..m; any other shape, the
        transposed (in, out) one included (Regressor's FitResult.weights is
        (in, out): pass weights.T), raises ValueError. alpha and bias: (out,)
        float32 data."""
        want = self.weight_shape()
        out = want[0]
        with Call(self._ctx) as c:
            ct = c.input(codes, B.I8, "codes")
            at = c.input(alpha, B.F32, "alpha")
            bt = c.input(bias, B.F32, "bias")
            for name, t, shape in (("codes", ct, want), ("alpha", at, (out,)),
                                   ("bias", bt, (out,))):
                if t is not None and tuple(t.shape) != shape:
                    hint = " (that is the transposed shape: pass codes.T)" \
                        if name == "codes" and tuple(t.shape) == tuple(reversed(want)) else ""
                    raise ValueError("%s.set: %s must have shape %s, got %s%s"
                                     % (type(self).__name__, name, shape, tuple(t.shape), hint))
            self._call("tsq_layer_lowbit_set", ct, at, bt)
        return self


class LowbitDense(_Lowbit):
    """y_c = alpha_c (x . w_c) + b_c with integer codes w (weight_bits 2..8;
    2 = ternary). Set the codes with set()."""

    def __init__(self, ctx: Context, in_features: int, out_features: int,
                 weight_bits: int = 2) -> None:
        self._create(ctx, "lowbit_dense", B.int_arg(in_features, "in_features"),
                     B.int_arg(out_features, "out_features"),
                     B.int_arg(weight_bits, "weight_bits"))


class LowbitConv2d(_Lowbit):
    """The low-bit form of Conv2d (see LowbitDense)."""

    def __init__(self, ctx: Context, cin: int, cout: int, kernel: Union[int, Tuple[int, int]],
                 stride: int = 1, pad: int = 0, weight_bits: int = 2) -> None:
        kh, kw = _kernel_hw(kernel)
        self._create(ctx, "lowbit_conv2d", B.int_arg(cin, "cin"), B.int_arg(cout, "cout"), kh, kw,
                     B.int_arg(stride, "stride"),
                     B.int_arg(pad, "pad"), B.int_arg(weight_bits, "weight_bits"))


_KIND_CLASSES = {_ffi.TSQ_LAYER_DENSE: Dense, _ffi.TSQ_LAYER_CONV2D: Conv2d,
                 _ffi.TSQ_LAYER_BATCHNORM: BatchNorm, _ffi.TSQ_LAYER_RELU: ReLU,
                 _ffi.TSQ_LAYER_ACT_QUANT: ActQuant, _ffi.TSQ_LAYER_MAXPOOL2D: MaxPool2d,
                 _ffi.TSQ_LAYER_GLOBAL_AVGPOOL: GlobalAvgPool, _ffi.TSQ_LAYER_FLATTEN: Flatten,
                 _ffi.TSQ_LAYER_LOWBIT_DENSE: LowbitDense,
                 _ffi.TSQ_LAYER_LOWBIT_CONV2D: LowbitConv2d}


def softmax_cross_entropy(ctx: Context, logits: ArrayLike, labels: ArrayLike,
                          grad: Union[bool, ArrayLike] = False) -> Tuple[float, int, Any]:
    """Mean softmax cross-entropy of logits (N, K) against labels: returns
    (loss, correct, dlogits), dlogits (N, K) only with grad=True (or an
    output array given as grad), else None."""
    loss, correct = ctypes.c_double(), ctypes.c_int64()
    lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
    with Call(ctx, like=logits) as c:
        lt = c.input(logits, B.F32, "logits")
        dt, dr = None, None
        if grad is not False and grad is not None:
            dt, dr = c.output(None if grad is True else grad, B.F32, lt.shape)
        ctx._check(lib.tsq_nn_softmax_cross_entropy(ctx.handle, lt, lab, n, ctypes.byref(loss),
                                                 ctypes.byref(correct), dt),
                   "tsq_nn_softmax_cross_entropy")
    return loss.value, correct.value, dr


class Net(Handle):
    """A sequential network (tsq_net) for inputs of a given sample shape,
    e.g. ``Net(ctx, (1, 28, 28))``. It owns its layers.

    Training is driven by the caller: ``net.set_optimizer_sgd(0.1)``, then
    ``net.train_step(x, labels)`` per batch; ``net.evaluate(x, labels)``.
    TSQ: ``net.learn_codes_batches(batches)`` (step 1),
    ``net.fit_transform_batches(batches)`` (step 2). Model files:
    ``net.save()`` / ``Net.load(ctx, data)``, save_file / load_file.

    Borrowed objects (layers, parameter tensors, the TSQ regressor) become
    invalid (ValueError on use) when the layer list changes and they are
    affected (parameter tensors always are)."""

    _destroy_name = "tsq_net_destroy"
    _errmsg_name = "tsq_net_errmsg"

    def __init__(self, ctx: Context, input_shape: Union[int, Sequence[int]]) -> None:
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        shape = tuple(B.int_arg(s, "input_shape") for s in input_shape)
        arr = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        out = ctypes.POINTER(_ffi.tsq_net)()
        ctx._check(lib.tsq_net_create(ctx.handle, len(shape), arr, ctypes.byref(out)),
                   "tsq_net_create")
        self._init_net(ctx, out)

    def _init_net(self, ctx, ptr):
        self._adopt(ctx, ptr)
        self._layer_views = weakref.WeakValueDictionary()
        self._last_x_shape = None
        self._regressor = None

    @classmethod
    def _take(cls, ctx, ptr):
        net = cls.__new__(cls)
        net._init_net(ctx, ptr)
        return net

    # ---- layers ------------------------------------------------------------

    def _layer_addresses(self):
        n = ctypes.c_int32()
        self._call("tsq_net_layer_count", ctypes.byref(n))
        out = []
        for i in range(n.value):
            p = ctypes.POINTER(_ffi.tsq_layer)()
            self._call("tsq_net_layer", i, ctypes.byref(p))
            out.append(ctypes.addressof(p.contents))
        return out

    def _views_alive(self):
        """The number of live numpy arrays / memoryviews over the memory of
        this net's layers (taken from the net or from a layer before it was
        appended)."""
        from ._base import _live
        res = self._res
        return len(res.pins) + sum(len(r.pins) for r in list(_live) if r.owner is res)

    def _changing(self, fn, *args, frees=True):
        """Runs fn(*args), a call that may change the layer list, then
        invalidates what the change made stale. frees: the call may free
        layers, so live views of their memory make it raise RuntimeError
        first (the alternative would be views of freed memory)."""
        if frees and self._res is not None:
            n = self._views_alive()
            if n:
                raise RuntimeError("%d numpy array(s) or memoryview(s) of this net's layer "
                                   "memory are alive, and this call may free layers: drop "
                                   "them first, or take copies (Tensor.numpy(copy=True))" % n)
        before = self._layer_addresses()
        try:
            return fn(*args)
        finally:
            if self._h is not None:
                after = self._layer_addresses()
                if after != before:
                    self._layers_changed(after)

    def _layers_changed(self, addresses):
        present = set(addresses)
        for view in list(self._borrowers):
            if view._h is None:
                continue
            if isinstance(view, Layer):
                if ctypes.addressof(view._h.contents) in present:
                    view._invalidate_borrowers()       # parameter tensors
                else:
                    view._invalidate()
            elif isinstance(view, Tensor):
                view._invalidate()
        self._last_x_shape = None

    def _adopt_layer(self, layer):
        layer._release_ownership(self)
        layer._net = weakref.ref(self)
        self._layer_views[ctypes.addressof(layer.handle.contents)] = layer

    def append(self, layer: Layer) -> "Net":
        """Appends a layer; the net then owns it. Returns self, so appends
        chain: ``net.append(a).append(b)``."""
        def run():
            self._call("tsq_net_append", layer)
            self._adopt_layer(layer)
        self._changing(run, frees=False)
        return self

    def insert_layer(self, index: int, layer: Layer) -> "Net":
        """Inserts a shape-preserving layer before position index."""
        def run():
            self._call("tsq_net_insert_layer", B.int_arg(index, "index"), layer)
            self._adopt_layer(layer)
        self._changing(run, frees=False)
        return self

    def replace_layer(self, index: int, layer: Layer) -> "Net":
        """Replaces layer index by `layer` (same input and output shapes);
        the old layer is freed."""
        def run():
            self._call("tsq_net_replace_layer", B.int_arg(index, "index"), layer)
            self._adopt_layer(layer)
        self._changing(run)
        return self

    def remove_layer(self, index: int) -> "Net":
        """Removes and frees a shape-preserving layer."""
        self._changing(self._call, "tsq_net_remove_layer", B.int_arg(index, "index"))
        return self

    def __len__(self):
        n = ctypes.c_int32()
        self._call("tsq_net_layer_count", ctypes.byref(n))
        return n.value

    def layer(self, index: int) -> Layer:
        """Layer `index` (negative counts from the end), a borrowed view."""
        n = len(self)
        if index < 0:
            index += n
        p = ctypes.POINTER(_ffi.tsq_layer)()
        self._call("tsq_net_layer", B.int_arg(index, "index"), ctypes.byref(p))
        addr = ctypes.addressof(p.contents)
        view = self._layer_views.get(addr)
        if view is None or view.closed:
            kind = ctypes.c_int32()
            lib.tsq_layer_kind(p, ctypes.byref(kind))
            view = _KIND_CLASSES.get(kind.value, Layer)._view(self._ctx, p, self)
            self._layer_views[addr] = view
        return view

    @property
    def layers(self):
        """All layers, in order (borrowed views)."""
        return [self.layer(i) for i in range(len(self))]

    @property
    def output_shape(self):
        """The sample shape of the output (the input's while empty)."""
        arr = (ctypes.c_int64 * 4)()
        n = ctypes.c_int32()
        self._call("tsq_net_output_shape", arr, 4, ctypes.byref(n))
        return tuple(arr[:n.value])

    def clone(self) -> Net:
        """A deep copy (layers, parameters, optimiser state)."""
        out = ctypes.POINTER(_ffi.tsq_net)()
        self._call("tsq_net_clone", ctypes.byref(out))
        return Net._take(self._ctx, out)

    def __deepcopy__(self, memo):
        """copy.deepcopy(net) is clone()."""
        return self.clone()

    def copy_params_from(self, src: Net) -> "Net":
        """Copies parameters and states from a net of the same structure."""
        self._call("tsq_net_copy_params", src)
        return self

    # ---- forward and backward --------------------------------------------

    def forward(self, x: ArrayLike, train: bool = False, out: Optional[ArrayLike] = None) -> Any:
        """Runs the net on the batch x (float32, (N, sample shape)) and
        returns the output (N, output shape)."""
        with Call(self._ctx, like=x) as c:
            xt = c.input(x, B.F32, "x")
            shape = xt.shape
            yt, result = c.output(out, B.F32, (shape[0],) + self.output_shape)
            self._call("tsq_net_forward", xt, yt, 1 if train else 0)
            self._last_x_shape = shape
        return result

    __call__ = forward

    def backward(self, dy: ArrayLike, dx: Union[bool, ArrayLike] = False) -> Any:
        """Back-propagates dy through the last forward, overwriting the
        parameter gradients. Returns the input gradient when dx is True (or
        an output array), else None."""
        with Call(self._ctx, like=dy) as c:
            dyt = c.input(dy, B.F32, "dy")
            dxt, result = None, None
            if dx is not False and dx is not None:
                shape = self._last_x_shape or (dyt.shape[0],)
                dxt, result = c.output(None if dx is True else dx, B.F32, shape)
            self._call("tsq_net_backward", dyt, dxt)
        return result

    def loss_backward(self, labels: ArrayLike) -> StepResult:
        """After a forward: mean cross-entropy against labels, back-propagated
        into the gradients without an update. Returns StepResult."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
        self._call("tsq_net_loss_backward", lab, n, ctypes.byref(loss), ctypes.byref(correct))
        return StepResult(loss.value, correct.value)

    def layer_output(self, index: int, out: Optional[ArrayLike] = None) -> Any:
        """The output of layer `index` in the last forward (-1: the input),
        float32 (N, layer output shape)."""
        if self._last_x_shape is None:
            n, sample = 1, (1,)         # the library reports "no forward"
        else:
            n = self._last_x_shape[0]
            sample = self._last_x_shape[1:] if index == -1 else self.layer(index).sample_shapes[1]
        with Call(self._ctx, like=out) as c:
            if out is None and B.np is None:
                c.want_tensor = True
            ot, result = c.output(out, B.F32, (n,) + tuple(sample))
            self._call("tsq_net_layer_output", B.int_arg(index, "index"), ot)
        return result

    # ---- training ----------------------------------------------------------

    def set_optimizer_sgd(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                          weight_decay: float = 0.0) -> "Net":
        """SGD with momentum, optional Nesterov and L2 weight decay."""
        self._call("tsq_net_set_optimizer_sgd", B.real_arg(lr, "lr"),
                   B.real_arg(momentum, "momentum"), 1 if nesterov else 0,
                   B.real_arg(weight_decay, "weight_decay"))
        return self

    def set_optimizer_adam(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                           eps: float = 1e-08, weight_decay: float = 0.0) -> "Net":
        """Adam with bias correction and L2 weight decay."""
        self._call("tsq_net_set_optimizer_adam", B.real_arg(lr, "lr"), B.real_arg(beta1, "beta1"),
                   B.real_arg(beta2, "beta2"),
                   B.real_arg(eps, "eps"), B.real_arg(weight_decay, "weight_decay"))
        return self

    def set_lr_schedule(self, kind: Union[str, int], steps: int = 1, param: float = 1.0) -> "Net":
        """"constant", "step" (steps = step size, param = gamma) or
        "cosine" (steps = T, param = final lr), over optimiser steps."""
        self._call("tsq_net_set_lr_schedule", _lookup(_SCHEDULES, kind, "schedule"),
                   B.int_arg(steps, "steps"), B.real_arg(param, "param"))
        return self

    @property
    def lr(self):
        """The learning rate of the next update."""
        v = ctypes.c_double()
        self._call("tsq_net_get_lr", ctypes.byref(v))
        return v.value

    @property
    def step_count(self):
        """The optimiser's update counter (settable, to resume)."""
        v = ctypes.c_int64()
        self._call("tsq_net_step_count", ctypes.byref(v))
        return v.value

    @step_count.setter
    def step_count(self, steps):
        self._call("tsq_net_set_step_count", B.int_arg(steps, "steps"))

    def update(self) -> "Net":
        """One optimiser update from the current gradients."""
        self._call("tsq_net_update")
        return self

    def train_step(self, x: ArrayLike, labels: ArrayLike) -> StepResult:
        """Forward (train mode), cross-entropy, backward and one update on
        one batch. Returns StepResult(loss, correct)."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            self._call("tsq_net_train_step", xt, lab, n, ctypes.byref(loss),
                       ctypes.byref(correct))
            self._last_x_shape = xt.shape
        return StepResult(loss.value, correct.value)

    def set_distillation(self, temperature: float, weight: float) -> "Net":
        """Soft targets for train_step_distill: temperature T and weight w."""
        self._call("tsq_net_set_distillation", B.real_arg(temperature, "temperature"),
                   B.real_arg(weight, "weight"))
        return self

    def train_step_distill(self, x: ArrayLike, labels: ArrayLike,
                           teacher_logits: ArrayLike) -> StepResult:
        """train_step with (1 - w) CE + w T^2 KL against a teacher's logits
        (N x classes, e.g. another net's forward in eval mode)."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            tt = c.input(teacher_logits, B.F32, "teacher_logits")
            self._call("tsq_net_train_step_distill", xt, lab, n, tt, ctypes.byref(loss),
                       ctypes.byref(correct))
            self._last_x_shape = xt.shape
        return StepResult(loss.value, correct.value)

    def evaluate(self, x: ArrayLike, labels: Optional[ArrayLike] = None,
                 predictions: bool = True) -> EvalResult:
        """Forward in eval mode: EvalResult(loss, correct, predictions);
        loss and correct need labels, predictions (int32 argmax per sample)
        can be skipped with predictions=False."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            n_batch = xt.shape[0]
            preds = B.new_array("i", (n_batch,)) if predictions else None
            if labels is None:
                lab, n, lp, cp = None, 0, None, None
            else:
                lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
                lp, cp = ctypes.byref(loss), ctypes.byref(correct)
            self._call("tsq_net_evaluate", xt, lab, n, lp, cp,
                       B.array_pointer(preds, ctypes.c_int32) if preds is not None else None)
            self._last_x_shape = xt.shape
        if labels is None:
            return EvalResult(None, None, preds)
        return EvalResult(loss.value, correct.value, preds)

    def params(self) -> List[Param]:
        """Every trainable parameter, in layer order, as Param tuples."""
        n = ctypes.c_int32()
        self._call("tsq_net_param_count", ctypes.byref(n))
        out = []
        for i in range(n.value):
            v = ctypes.POINTER(_ffi.tsq_tensor)()
            g = ctypes.POINTER(_ffi.tsq_tensor)()
            li = ctypes.c_int32()
            name = ctypes.c_char_p()
            self._call("tsq_net_param", i, ctypes.byref(v), ctypes.byref(g), ctypes.byref(li),
                       ctypes.byref(name))
            owner = self.layer(li.value)
            out.append(Param(name.value.decode(), Tensor._view(self._ctx, v, owner),
                             Tensor._view(self._ctx, g, owner) if g else None, li.value))
        return out

    def fold_batchnorm(self) -> int:
        """Folds every batch-norm after a dense/conv/low-bit layer into it
        and removes it. Returns the number folded."""
        folded = ctypes.c_int32()
        self._changing(self._call, "tsq_net_fold_batchnorm", ctypes.byref(folded))
        return folded.value

    def convert_qat(self) -> int:
        """Ends joint QAT: quantization-aware layers become low-bit ones
        (batch-norms folded). Returns the number converted."""
        converted = ctypes.c_int32()
        self._changing(self._call, "tsq_net_convert_qat", ctypes.byref(converted))
        return converted.value

    # ---- network-level TSQ -------------------------------------------------

    def set_tsq_option(self, key: Union[str, int], value: Union[float, str]) -> "Net":
        """A network-level TSQ option: "act_bits", "per_channel", "eps_mode"
        ("joint"... or a number), "eps", "sparsity", "positions"."""
        k = _lookup(_TSQ_OPTIONS, key, "TSQ option")
        if k == _ffi.TSQ_NET_TSQ_EPS_MODE and isinstance(value, str):
            from .quantizer import EPS_MODES
            value = _lookup(EPS_MODES, value, "eps mode")
        self._call("tsq_net_set_conversion_option", k, B.real_arg(value, "value"))
        return self

    def get_tsq_option(self, key: Union[str, int]) -> float:
        """Reads a network-level TSQ option (a float)."""
        v = ctypes.c_double()
        self._call("tsq_net_get_conversion_option", _lookup(_TSQ_OPTIONS, key, "TSQ option"),
                   ctypes.byref(v))
        return v.value

    @staticmethod
    def tsq_option_bounds(key: Union[str, int]) -> Tuple[float, float]:
        """The inclusive (lo, hi) range of a network-level TSQ option."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_net_conversion_option_bounds(_lookup(_TSQ_OPTIONS, key, "TSQ option"),
                                                   ctypes.byref(lo), ctypes.byref(hi)),
                     "tsq_net_conversion_option_bounds")
        return lo.value, hi.value

    @property
    def tsq_regressor(self):
        """The Regressor (borrowed) that fit_transform uses: set its options
        (weight_bits, rounds, ...) before the session starts."""
        if self._regressor is None or self._regressor.closed:
            p = ctypes.POINTER(_ffi.tsq_regressor)()
            self._call("tsq_net_tsq_regressor", ctypes.byref(p))
            self._regressor = Regressor._view(self._ctx, p, self)
        return self._regressor

    def learn_codes(self, x: Optional[ArrayLike], last: bool = False) -> Any:
        """Step 1 on the net, one calibration batch per call (last=True on
        the final one, which fits and places the quantizers). Returns done."""
        done = ctypes.c_int32()
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            self._changing(self._call, "tsq_net_learn_codes", xt, 1 if last else 0,
                           ctypes.byref(done))
        return bool(done.value)

    def learn_codes_batches(self, batches: Iterable[Any]) -> Any:
        """learn_codes over a sequence of batches (the last marked)."""
        batches = list(batches)
        done = False
        for i, x in enumerate(batches):
            done = self.learn_codes(x, i == len(batches) - 1)
        return done

    def fit_transform(self, x: ArrayLike, last: bool = False) -> Any:
        """Step 2 on the net, one batch per call, last=True at the end of
        each pass, until it returns True (done)."""
        done = ctypes.c_int32()
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            self._changing(self._call, "tsq_net_fit_transform", xt, 1 if last else 0,
                           ctypes.byref(done))
        return bool(done.value)

    def fit_transform_batches(self, batches: Iterable[Any], max_passes: int = 100000) -> Any:
        """fit_transform pass after pass over a sequence of batches until
        done. Returns the number of passes."""
        batches = list(batches)
        for p in range(max_passes):
            for i, x in enumerate(batches):
                if self.fit_transform(x, i == len(batches) - 1):
                    return p + 1
        raise RuntimeError("fit_transform: not done after %d passes" % max_passes)

    def tsq_cancel(self) -> "Net":
        """Ends a running learn_codes / fit_transform session."""
        self._call("tsq_net_tsq_cancel")
        return self

    def tsq_progress(self) -> TsqProgress:
        """The session's TsqProgress(stage, unit, units, passes)."""
        st, unit, units, passes = (ctypes.c_int32() for _ in range(4))
        self._call("tsq_net_tsq_progress", ctypes.byref(st), ctypes.byref(unit),
                   ctypes.byref(units), ctypes.byref(passes))
        return TsqProgress(_STAGES.get(st.value, st.value), unit.value, units.value,
                           passes.value)

    def tsq_history(self, unit: int, series: Union[str, int] = 'objective') -> Tuple[List[float],
                    int]:
        """(values, layer_index): the regressor history of converted layer
        `unit` of the last fit_transform session."""
        key = _lookup(HISTORY_SERIES, series, "history series")
        count, li = ctypes.c_int32(), ctypes.c_int32()
        self._call("tsq_net_tsq_history", B.int_arg(unit, "unit"), key, None, 0,
                   ctypes.byref(count),
                   ctypes.byref(li))
        vals = (ctypes.c_double * max(count.value, 1))()
        self._call("tsq_net_tsq_history", B.int_arg(unit, "unit"), key, vals, count.value,
                   ctypes.byref(count), ctypes.byref(li))
        return [vals[i] for i in range(count.value)], li.value

    # ---- model files ---------------------------------------------------------

    def save(self) -> bytes:
        """The net as bytes in the .tsq model format."""
        size = ctypes.c_uint64()
        self._call("tsq_net_save", None, 0, ctypes.byref(size))
        buf = (ctypes.c_char * max(size.value, 1))()
        self._call("tsq_net_save", buf, size.value, ctypes.byref(size))
        return bytes(buf[:size.value])

    @classmethod
    def load(cls, ctx: Context, data: ArrayLike) -> "Net":
        """A new net from bytes made by save()."""
        data = bytes(data)
        out = ctypes.POINTER(_ffi.tsq_net)()
        ctx._check(lib.tsq_net_load(ctx.handle, data, len(data), ctypes.byref(out)),
                   "tsq_net_load")
        return cls._take(ctx, out)

    def save_file(self, path: Union[str, bytes, os.PathLike]) -> "Net":
        """Writes the model file at path (atomically, through a rename)."""
        self._call("tsq_net_save_file", os.fsencode(path))
        return self

    @classmethod
    def load_file(cls, ctx: Context, path: Union[str, bytes, os.PathLike]) -> "Net":
        """A new net from a model file."""
        out = ctypes.POINTER(_ffi.tsq_net)()
        ctx._check(lib.tsq_net_load_file(ctx.handle, os.fsencode(path), ctypes.byref(out)),
                   "tsq_net_load_file")
        return cls._take(ctx, out)

    @property
    def weight_bytes(self):
        """Bytes of the weights in a model file (packed low-bit codes plus
        float parameters and states)."""
        v = ctypes.c_uint64()
        self._call("tsq_net_weight_bytes", ctypes.byref(v))
        return v.value

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Net closed>"
        layers = self.layers
        if len(layers) <= 4:
            body = " -> ".join(l._describe() for l in layers)
        else:
            body = " -> ".join(l.kind_name for l in layers)
        return "<tsq.Net %s -> %s: %s>" % (self._input_shape(), self.output_shape, body or "empty")

    def _input_shape(self):
        if len(self) == 0:
            return self.output_shape
        return self.layer(0).sample_shapes[0]
