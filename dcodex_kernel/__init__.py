"""DCodeX Kernel: run C, C++ and Python safely from Jupyter.

Importing the package stays light (no IPython, no grpc): `%load_ext dcodex_kernel` imports the
magics only when IPython asks for them.
"""

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as unload

    unload(ipython)
