"""The handle base class: ownership, finalisers, closing, error reporting.

Lifetime rules (docs/python.md, "Lifetimes"):

* an *owned* handle holds a Resource, the one object whose release destroys
  the C object. close() (or the end of a ``with`` block, or collection)
  drops the handle's reference: the C object is destroyed at once unless a
  numpy array or memoryview of its memory still holds the Resource, and
  then when the last of them goes. A Resource holds its Context's
  Resource, so a context is destroyed only after every object made from it;
* a *borrowed* handle (a layer owned by a net, a parameter tensor, the net's
  regressor) has no finaliser: it keeps its owner alive and is invalidated
  (further use raises ValueError) when the owner closes or, for a net, when
  its layer list changes;
* Context.close() closes every object still open that was made from it, in
  reverse order of creation, then the context itself.
"""

import atexit
import itertools
import weakref

from ._lib import TsqError, lib, status_string

_serials = itertools.count()
_live = weakref.WeakSet()       # every Resource not yet collected


@atexit.register
def _release_all():
    """At interpreter exit, before modules are torn down: destroy what is
    still alive, newest first (children before their context)."""
    for res in sorted(_live, key=lambda r: r.serial, reverse=True):
        res.release()


class Resource(object):
    """Owns one C object: release() (or the collection of the last
    reference) calls its destructor once. `keep` holds what must outlive
    the C object (the Context's Resource, a wrapped buffer, callbacks);
    `owner` is the Resource of the object that owns this one once the
    ownership moved (a layer appended to a net), kept alive with it.
    ``pins`` counts the live numpy/memoryview views over its memory."""

    __slots__ = ("fn", "ptr", "keep", "owner", "pins", "serial", "__weakref__")

    def __init__(self, fn, ptr, keep):
        self.fn, self.ptr, self.keep, self.owner = fn, ptr, keep, None
        self.pins = weakref.WeakSet()
        self.serial = next(_serials)
        _live.add(self)

    def release(self):
        fn, self.fn = self.fn, None
        if fn is not None:
            fn(self.ptr)
        self.keep = None

    def __del__(self):
        self.release()


class _Pin(object):
    """The base object of a numpy array or memoryview over library memory:
    it holds the Resource that owns the memory, so the memory outlives
    close() and the ``with`` block as long as the view exists. It exports
    the memory through the array interface (numpy) or a ctypes array."""

    __slots__ = ("resource", "__array_interface__", "carray", "__weakref__")

    def __init__(self, resource, interface=None, carray=None):
        self.resource = resource
        self.__array_interface__ = interface
        self.carray = carray
        resource.pins.add(self)


def _copy_refused(self, *args):
    raise TypeError("a tsq.%s handle cannot be copied or pickled: it owns a C object "
                    "of one context (use clone() / save() and load() where the class has "
                    "them)" % type(self).__name__)


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
    _res = None                 # the Resource: owned, or the owner's for a borrowed view
    _owns = False
    _owner = None

    __copy__ = _copy_refused
    __deepcopy__ = _copy_refused
    __reduce_ex__ = _copy_refused

    # ---- construction helpers ----------------------------------------

    def _adopt(self, ctx, ptr, keep=None):
        """Takes ownership of the new C object `ptr` (non-NULL): registers
        the finaliser first, so nothing that follows can leak it."""
        self._h = ptr
        self._ctx = ctx
        self._owner = None
        self._borrowers = weakref.WeakSet()
        self._serial = next(_serials)
        self._res = Resource(getattr(lib, self._destroy_name), ptr,
                             (ctx._res if ctx is not None else None, keep))
        self._owns = True
        if ctx is not None:
            ctx._children.add(self)

    def _borrowed(self, ctx, ptr, owner):
        """Makes this a view of a C object that `owner` owns."""
        self._h = ptr
        self._ctx = ctx
        self._owner = owner
        self._borrowers = weakref.WeakSet()
        self._serial = next(_serials)
        self._res = owner._res          # views of its memory keep the owner's C object
        self._owns = False
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
        return self._owns

    def _invalidate(self):
        for b in list(self._borrowers):
            b._invalidate()
        self._h = None
        self._owner = None
        self._res = None
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
        if self._owns:
            self._res.fn = None             # the new owner destroys it
            self._res.owner = new_owner._res    # views taken before stay valid with it
            self._owns = False
        self._owner = new_owner
        new_owner._borrowers.add(self)

    def close(self) -> None:
        """Destroys the C object now (an owned one) or detaches this view (a
        borrowed one). Views borrowed from it are invalidated first. A numpy
        array or memoryview of its memory keeps the memory (and the C
        object) until the view goes: using it stays valid. Calling close()
        twice is harmless."""
        if self._h is None:
            return
        for b in list(self._borrowers):
            b._invalidate()
        self._h = None
        self._owner = None
        # Dropping the last reference destroys the C object (Resource.__del__);
        # a view's _Pin may hold one more, and then the view's end does.
        self._res = None
        self._owns = False
        self._closed_hook()

    def _pin(self, interface=None, carray=None):
        """A _Pin of this object's memory (see _Pin)."""
        return _Pin(self._res, interface, carray)

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
        """Raises TsqError with this object's message for a failed call, or,
        when a progress callback cancelled it by raising, that exception."""
        if status:
            error = TsqError(status, self._message(), call)
            reraise_progress(self._ctx if self._ctx is not None else self, error)
            raise error

    def _call(self, name, *args):
        """Calls tsq_<name>(self, *args); errors are reported on self."""
        self._check(getattr(lib, name)(self.handle, *args), name)


def reraise_progress(ctx, error):
    """Re-raises the exception with which ctx's progress callback cancelled
    the call that failed with `error`, if there is one."""
    hook = getattr(ctx, "_reraise_progress", None)
    if hook is not None:
        hook(error)


def check_static(status, call):
    """Errors of calls that have no object to hold a message (bounds
    queries): the message is the status' description."""
    if status:
        raise TsqError(status, "%s: %s" % (call, status_string(status)), call)
