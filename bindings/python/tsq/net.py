"""Sequential networks (tsq_net, include/tsq/nn.h): the layer list and
its ownership, forward and backward, parameters, model files
(include/tsq/model.h). Training (training.py) and network-level TSQ
(conversion.py) are mixed in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Union

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401

import ctypes
import os
import weakref

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike  # noqa: F401
from ._base import Handle
from ._call import Call
from ._lib import lib
from .conversion import _Conversion
from .layers import _KIND_CLASSES, Layer, Param
from .tensor import Tensor
from .training import _Training

__all__ = ["Net"]


class Net(_Training, _Conversion, Handle):
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
