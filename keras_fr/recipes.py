"""Another name of ``keras_fr.training.recipes`` (the same module object), kept for code written before
training became one subpackage."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("keras_fr.training.recipes")
