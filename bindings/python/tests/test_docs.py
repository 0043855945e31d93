"""Every public class, function, method and property has a docstring."""

import inspect
import unittest

from tsqtest import tsq


def public_members(obj):
    for name, member in vars(obj).items():
        if not name.startswith("_"):
            yield name, member


class Docstrings(unittest.TestCase):

    def test_everything_public_is_documented(self):
        missing = []
        self.assertTrue(tsq.__doc__)
        for name in dir(tsq):
            if name.startswith("_") or name.startswith("TSQ_"):
                continue
            obj = getattr(tsq, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            if not inspect.getdoc(obj):
                missing.append(name)
            if inspect.isclass(obj) and obj.__module__.startswith("tsq"):
                for cls in obj.__mro__:
                    if not cls.__module__.startswith("tsq"):
                        continue
                    for mname, member in public_members(cls):
                        if isinstance(member, (staticmethod, classmethod)):
                            member = member.__func__
                        if isinstance(member, property) or inspect.isfunction(member):
                            if not inspect.getdoc(member):
                                missing.append("%s.%s" % (cls.__name__, mname))
        self.assertEqual(sorted(set(missing)), [])

    def test_public_api_is_annotated(self):
        """Type hints on every parameter and return of the public classes
        and functions (properties aside: their getters say what they are)."""
        missing = []

        def check(qual, fn):
            sig = inspect.signature(fn)
            for p in sig.parameters.values():
                if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty:
                    missing.append("%s(%s)" % (qual, p.name))
            if sig.return_annotation is inspect.Signature.empty:
                missing.append("%s -> ?" % qual)
        for name in dir(tsq):
            obj = getattr(tsq, name)
            if name.startswith("_") or getattr(obj, "__module__", "") in (None, "") or \
                    not str(getattr(obj, "__module__", "")).startswith("tsq.") or \
                    str(obj.__module__) in ("tsq._ffi", "tsq._lib"):
                continue
            if inspect.isfunction(obj):
                check(name, obj)
            elif inspect.isclass(obj) and not issubclass(obj, tuple):
                for cls in obj.__mro__:
                    if not cls.__module__.startswith("tsq"):
                        continue
                    for mname, member in vars(cls).items():
                        if mname.startswith("_") and mname != "__init__":
                            continue
                        if isinstance(member, (staticmethod, classmethod)):
                            member = member.__func__
                        if inspect.isfunction(member):
                            check("%s.%s" % (cls.__name__, mname), member)
        self.assertEqual(sorted(set(missing)), [])


if __name__ == "__main__":
    unittest.main()
