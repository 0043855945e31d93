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


if __name__ == "__main__":
    unittest.main()
