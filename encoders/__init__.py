"""Vision encoders; importing the package imports each of its modules, which registers the
encoders (a new encoder is one module here, with no list to edit)."""

from zoo.registry import import_submodules

import_submodules(__name__)
