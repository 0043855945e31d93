"""The Python names follow the C API's: one option spelling per handle
(set_option / get_option / option_bounds, the net's *_conversion_option),
every option key of a family has a name, C calls on a handle's family are
that class's methods, and the names used before the C renames are gone
(the project is unreleased: no aliases)."""

import unittest

from tsqtest import TestCase, needs_numpy, np, tsq

# (C prefix of the keys, family base, class, a live instance maker)
FAMILIES = [
    ("TSQ_CONTEXT_", 0x0100, "Context"),
    ("TSQ_QUANTIZER_", 0x0200, "Quantizer"),
    ("TSQ_REGRESSOR_", 0x0300, "Regressor"),
    ("TSQ_LAYER_OPT_", 0x0400, "Layer"),
    ("TSQ_NET_TSQ_", 0x0600, "Net"),
]

# Names the bindings had before the C renames, each on its owner.
OLD_NAMES = [
    ("Quantizer", "set_param"), ("Quantizer", "get_param"), ("Quantizer", "param_bounds"),
    ("Regressor", "set_param"), ("Regressor", "get_param"), ("Regressor", "param_bounds"),
    ("Net", "set_tsq_option"), ("Net", "get_tsq_option"), ("Net", "tsq_option_bounds"),
    ("tsq", "cpu_features"), ("tsq", "cpu_feature_names"),       # now Context methods
    ("tsq", "im2col_rows"), ("tsq", "im2col_output_rows"),       # now Regressor's
    ("tsq", "im2col_sample_positions"),
]

# C call -> the Python attribute that makes it.
RENAMED_CALLS = [
    ("tsq_quantizer_set_option", "Quantizer.set_option"),
    ("tsq_quantizer_get_option", "Quantizer.get_option"),
    ("tsq_quantizer_option_bounds", "Quantizer.option_bounds"),
    ("tsq_regressor_set_option", "Regressor.set_option"),
    ("tsq_regressor_get_option", "Regressor.get_option"),
    ("tsq_regressor_option_bounds", "Regressor.option_bounds"),
    ("tsq_context_set_option", "Context.set_option"),
    ("tsq_context_get_option", "Context.get_option"),
    ("tsq_context_option_bounds", "Context.option_bounds"),
    ("tsq_layer_set_option", "Layer.set_option"),
    ("tsq_layer_get_option", "Layer.get_option"),
    ("tsq_layer_option_bounds", "Layer.option_bounds"),
    ("tsq_net_set_conversion_option", "Net.set_conversion_option"),
    ("tsq_net_get_conversion_option", "Net.get_conversion_option"),
    ("tsq_net_conversion_option_bounds", "Net.conversion_option_bounds"),
    ("tsq_context_cpu_features", "Context.cpu_features"),
    ("tsq_nn_softmax_cross_entropy", "nn.softmax_cross_entropy"),
    ("tsq_regressor_im2col_rows", "Regressor.im2col_rows"),
    ("tsq_regressor_im2col_output_rows", "Regressor.im2col_output_rows"),
    ("tsq_regressor_im2col_sample_positions", "Regressor.im2col_sample_positions"),
]


def resolve(dotted):
    obj = tsq
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


class Names(TestCase):

    def make(self, cls):
        """A live object of `cls` (for the instance-side checks)."""
        if cls == "Context":
            return self.ctx
        if cls == "Quantizer":
            return tsq.Quantizer(self.ctx, 2)
        if cls == "Regressor":
            return tsq.Regressor(self.ctx)
        if cls == "Layer":
            return tsq.BatchNorm(self.ctx, 3)
        return tsq.Net(self.ctx, (4,))

    def test_old_names_raise_attribute_error(self):
        for owner, name in OLD_NAMES:
            with self.subTest(owner=owner, name=name):
                holder = tsq if owner == "tsq" else getattr(tsq, owner)
                self.assertFalse(hasattr(holder, name))
                with self.assertRaises(AttributeError):
                    getattr(holder, name)
                if owner != "tsq":
                    with self.assertRaises(AttributeError):
                        getattr(self.make(owner), name)

    def test_quantizer_eps_is_refused_both_ways(self):
        """q.eps was the fixed mode's option under a name that reads like the
        fitted eps: reading or assigning it raises, naming both."""
        q = tsq.Quantizer(self.ctx, 2, eps_mode="fixed", eps=0.25)
        with self.assertRaises(AttributeError) as cm:
            q.eps
        self.assertIn("fixed_eps", str(cm.exception))
        self.assertIn("fitted_eps", str(cm.exception))
        with self.assertRaises(AttributeError):
            q.eps = 0.5                        # not a silent new attribute either
        self.assertEqual(q.fixed_eps, 0.25)
        self.assertFalse(hasattr(q, "eps"))

    def test_renamed_c_calls_have_their_python_name(self):
        for call, dotted in RENAMED_CALLS:
            with self.subTest(call=call):
                self.assertTrue(hasattr(tsq.lib, call), call)       # the C name exists...
                fn = resolve(dotted)                               # ...and so does Python's
                self.assertTrue(callable(fn))
                self.assertIn(call, fn.__doc__ or "",
                              "%s's docstring should name %s" % (dotted, call))

    def test_every_option_key_has_a_name(self):
        """Each TSQ_<FAMILY>_<NAME> key in the family's range is the Python
        option "<name>", in get_option, option_bounds and set_option."""
        for prefix, base, cls in FAMILIES:
            obj = self.make(cls)
            bounds = (obj.conversion_option_bounds if cls == "Net" else obj.option_bounds)
            get = (obj.get_conversion_option if cls == "Net" else obj.get_option)
            keys = dict((n, v) for n, v in tsq.CONSTANTS.items()
                        if n.startswith(prefix) and base < v < base + 0x100)
            self.assertTrue(keys, prefix)
            self.assertEqual(sorted(keys.values()),
                             list(range(base + 1, base + 1 + len(keys))),
                             "%s keys are base + 1, base + 2, ..." % prefix)
            for cname, number in keys.items():
                name = cname[len(prefix):].lower()
                with self.subTest(key=cname):
                    self.assertEqual(bounds(name), bounds(number))
                    try:
                        by_number = get(number)
                    except tsq.TsqError:            # a key this layer kind lacks
                        with self.assertRaises(tsq.TsqError):
                            get(name)
                        continue
                    self.assertEqual(get(name), by_number)

    def test_every_read_key_has_a_name(self):
        """The same for the read-only key families: layer info, context
        info, plan, packed weights, thresholds (each get(name) equals
        get(number), and the message of an unknown name lists them)."""
        net = tsq.Net(self.ctx, (3,)).append(tsq.Dense(self.ctx, 3, 3))
        net.append(tsq.ActQuant(self.ctx, 2, 0.1, 0.5))
        net.layer(1).output_codes = True
        net.append(tsq.LowbitDense(self.ctx, 3, 2).set([[1, 0, -1], [0, 1, 1]], [1.0, 0.5]))
        plan = tsq.Plan(self.ctx, net)
        packed = tsq.PackedWeights(self.ctx, tsq.Tensor(self.ctx, [[1, -1], [0, 1]], dtype="int8"))
        th = tsq.Thresholds(self.ctx, [1.0, 2.0], None, 2, 0.5, 1.0)
        dense = net.layer(0)
        families = [("TSQ_LAYER_INFO_", 0x0500, dense.info),
                    ("TSQ_INFO_", 0x0A00, self.ctx.info),
                    ("TSQ_PLAN_", 0x0700, plan.get),
                    ("TSQ_PACKED_", 0x0800, packed.get),
                    ("TSQ_THRESHOLDS_", 0x0900, th.get)]
        for prefix, base, get in families:
            keys = dict((n, v) for n, v in tsq.CONSTANTS.items()
                        if n.startswith(prefix) and base < v < base + 0x100)
            self.assertTrue(keys, prefix)
            for cname, number in keys.items():
                name = cname[len(prefix):].lower()
                with self.subTest(key=cname):
                    try:
                        by_number = get(number)
                    except tsq.TsqError:            # info a dense layer does not have
                        with self.assertRaises(tsq.TsqError):
                            get(name)
                        continue
                    self.assertEqual(get(name), by_number)
            with self.assertRaises(ValueError) as cm:
                get("no_such_key")
            self.assertIn(sorted(keys)[0][len(prefix):].lower(), str(cm.exception))

    def test_set_option_by_new_names(self):
        reg = tsq.Regressor(self.ctx, polish=0, restarts=2)
        self.assertEqual((reg.get_option("polish"), reg.get_option("restarts")), (0.0, 2.0))
        net = tsq.Net(self.ctx, (4,))
        self.assertIs(net.set_conversion_option("sequential", 1), net)
        self.assertEqual(net.get_conversion_option(tsq.TSQ_NET_TSQ_SEQUENTIAL), 1.0)
        net.set_conversion_option("eps_mode", "fixed")
        self.assertEqual(net.get_conversion_option("eps_mode"), tsq.TSQ_EPS_FIXED)
        q = tsq.Quantizer(self.ctx, 2)
        q.set_option("eps_mode", "sparsity")
        self.assertEqual(q.get_option("eps_mode"), tsq.TSQ_EPS_SPARSITY)
        bn = tsq.BatchNorm(self.ctx, 3)
        self.assertIs(bn.set_option("bn_frozen", 1), bn)
        self.assertEqual(bn.get_option("bn_frozen"), 1.0)

    def test_wrong_family_and_unknown_names_refused(self):
        q = tsq.Quantizer(self.ctx, 2)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            q.set_option(tsq.TSQ_REGRESSOR_ROUNDS, 3)      # a regressor key
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.Net(self.ctx, (4,)).get_conversion_option(tsq.TSQ_QUANTIZER_BITS)
        with self.assertRaises(tsq.TsqError):
            tsq.Regressor.option_bounds(tsq.TSQ_LAYER_OPT_TRAINABLE)
        with self.assertRaises(ValueError) as cm:
            tsq.Net(self.ctx, (4,)).set_conversion_option("idle", 0)   # a stage, not a key
        self.assertIn("sequential", str(cm.exception))                 # the message lists them
        with self.assertRaises(ValueError):
            q.set_option("eps_mode", "bogus")
        with self.assertRaises(TypeError):
            q.set_option(2.5, 1)                                       # a key is a name or int

    def test_cpu_features_on_the_context(self):
        bits = self.ctx.cpu_features()
        names = self.ctx.cpu_feature_names()
        self.assertIsInstance(bits, int)
        self.assertEqual(len(names), bin(bits).count("1"))
        for n in names:
            # the constant's name, but for the hyphen of "amx-int8"
            self.assertTrue(bits & tsq.CONSTANTS["TSQ_CPU_" + n.upper().replace("-", "")])

    def test_softmax_cross_entropy_is_the_nn_call(self):
        self.assertIs(tsq.nn.softmax_cross_entropy, tsq.softmax_cross_entropy)

    @needs_numpy
    def test_im2col_on_the_regressor_needs_no_regressor(self):
        x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
        rows = tsq.Regressor.im2col_rows(self.ctx, x, 3, 3)
        np.testing.assert_array_equal(rows, x.reshape(2, 9))
        self.assertEqual(tsq.Regressor.im2col_sample_positions(self.ctx, 2, 9, 3).shape, (6,))

    def test_unknown_layout_and_kernel_are_value_errors(self):
        with self.assertRaises(ValueError):
            tsq.kernel_name("no_such_kernel")
        with self.assertRaises(ValueError):
            tsq.im2col_codes(self.ctx, [[[[1]]]], 1, 1, layout="nope")


if __name__ == "__main__":
    unittest.main()
