"""The handle base class: ownership, finalisers, closing, error reporting.

Lifetime rules (docs/python.md, "Lifetimes"):

* an *owned* handle has a weakref.finalize that destroys the C object when
  the Python object is collected, or at close() / the end of a ``with``
  block. The finaliser holds the Context, so a context is destroyed only
  after every object made from it;
* a *borrowed* handle (a layer owned by a net, a parameter tensor, the net's
  regressor) has no finaliser: it keeps its owner alive and is invalidated
  (further use raises ValueError) when the owner closes or, for a net, when
  its layer list changes;
* Context.close() closes every object still open that was made from it, in
  reverse order of creation, then the context itself.
"""

import itertools
import weakref

from ._lib import TsqError, lib, status_string

_serials = itertools.count()


def _destroy(fn, ptr, keep):
    """Finaliser body: the C destructor. `keep` holds what must outlive the
    C object (the Context wrapper, a wrapped buffer, callbacks)."""
    fn(ptr)


class Handle(object):
    """Base of every libtsq object: Context, Tensor, Quantizer, Regressor,
    Layer, Net, PackedWeights, Thresholds.

    Handles are context managers (``with tsq.Tensor(...) as t:``) and are
    closed by close(), by the end of the with block, or when collected.
    ``handle`` (and ``_as_parameter_``, so the object can be passed to the raw
    ``tsq.lib`` calls) is the ctypes pointer; it raises ValueError once the
    object is closed."""

    _destroy_name = None        # C destructor, e.g. "tsq_tensor_destroy"
    _errmsg_name = None         # C message getter, e.g. "tsq_tensor_errmsg"
    _h = None
    _ctx = None
    _fin = None
    _owner = None

    # ---- construction helpers ----------------------------------------

    def _adopt(self, ctx, ptr, keep=None):
        """Takes ownership of the new C object `ptr` (non-NULL): registers
        the finaliser first, so nothing that follows can leak it."""
        self._h = ptr
        self._ctx = ctx
        self._owner = None
        self._borrowers = weakref.WeakSet()
        self._serial = next(_serials)
        self._fin = weakref.finalize(self, _destroy, getattr(lib, self._destroy_name), ptr,
                                     (ctx, keep))
        if ctx is not None:
            ctx._children.add(self)

    def _borrowed(self, ctx, ptr, owner):
        """Makes this a view of a C object that `owner` owns."""
        self._h = ptr
        self._ctx = ctx
        self._owner = owner
        self._borrowers = weakref.WeakSet()
        self._serial = next(_serials)
        self._fin = None
        owner._borrowers.add(self)
        if ctx is not None:
            ctx._children.add(self)

    @classmethod
    def _new_borrowed(cls, ctx, ptr, owner):
        obj = cls.__new__(cls)
        obj._borrowed(ctx, ptr, owner)
        return obj

    # ---- state ---------------------------------------------------------

    @property
    def handle(self):
        """The ctypes pointer to the C object (ValueError once closed)."""
        if self._h is None:
            raise ValueError("operation on a closed %s" % type(self).__name__)
        return self._h

    @property
    def _as_parameter_(self):
        return self.handle

    @property
    def closed(self):
        """True once the object is closed (or its owner closed it)."""
        return self._h is None

    @property
    def context(self):
        """The Context this object was made from (None for a Context)."""
        return self._ctx

    @property
    def owned(self):
        """True if this Python object destroys the C object; False for a
        borrowed view (a layer appended to a net, a parameter tensor...)."""
        return self._fin is not None

    def _invalidate(self):
        for b in list(self._borrowers):
            b._invalidate()
        self._h = None
        self._owner = None
        self._closed_hook()

    def _closed_hook(self):
        """Subclasses drop here what they no longer need once closed."""

    def _invalidate_borrowers(self, keep=None):
        """Invalidates every borrowed view of this object, except those for
        which keep(view) is true."""
        for b in list(self._borrowers):
            if keep is None or not keep(b):
                b._invalidate()

    def _release_ownership(self, new_owner):
        """The C object now belongs to new_owner (e.g. a net took a layer):
        drop the finaliser without destroying, and become a borrowed view."""
        if self._fin is not None:
            self._fin.detach()
            self._fin = None
        self._owner = new_owner
        new_owner._borrowers.add(self)

    def close(self):
        """Destroys the C object now (an owned one) or detaches this view (a
        borrowed one). Views borrowed from it are invalidated first. Calling
        close() twice is harmless."""
        if self._h is None:
            return
        for b in list(self._borrowers):
            b._invalidate()
        self._h = None
        self._owner = None
        if self._fin is not None:
            fin, self._fin = self._fin, None
            fin()
        self._closed_hook()

    def __enter__(self):
        self.handle                     # refuse a closed object
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    # ---- errors --------------------------------------------------------

    def _message(self):
        if self._h is None or self._errmsg_name is None:
            return ""
        raw = getattr(lib, self._errmsg_name)(self._h)
        return raw.decode("utf-8", "replace") if raw else ""

    def _check(self, status, call):
        """Raises TsqError with this object's message for a failed call."""
        if status:
            raise TsqError(status, self._message(), call)

    def _call(self, name, *args):
        """Calls tsq_<name>(self, *args); errors are reported on self."""
        self._check(getattr(lib, name)(self.handle, *args), name)


def check_static(status, call):
    """Errors of calls that have no object to hold a message (bounds
    queries): the message is the status' description."""
    if status:
        raise TsqError(status, "%s: %s" % (call, status_string(status)), call)
