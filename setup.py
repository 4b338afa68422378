"""Builds the PMC parser's optional compiled helper (`mediswift/data/_pmc_fast.pyx`); everything
else is configured in pyproject.toml. Where no C compiler is at hand the install goes on without
it (`optional=True`) and the parser runs its Python path: the same output, ~1.3x slower."""

import lxml
from Cython.Build import cythonize
from setuptools import Extension, setup

helper = Extension(
    "mediswift.data._pmc_fast",
    ["mediswift/data/_pmc_fast.pyx"],
    include_dirs=lxml.get_include(),  # lxml's public C API, and the libxml2 headers it ships
    optional=True,
)
setup(ext_modules=cythonize([helper], quiet=True))
