"""Builds the parsers' optional compiled helpers (`mediswift/data/_pmc_fast.pyx`,
`_pubmed_fast.pyx`); everything else is configured in pyproject.toml. Where no C compiler is at
hand the install goes on without them (`optional=True`) and the parsers run their Python paths:
the same output, slower (PMC ~1.3x)."""

import lxml
from Cython.Build import cythonize
from setuptools import Extension, setup

helpers = [
    Extension(
        f"mediswift.data.{name}",
        [f"mediswift/data/{name}.pyx"],
        include_dirs=lxml.get_include(),  # lxml's public C API, and the libxml2 headers it ships
        optional=True,
    )
    for name in ("_pmc_fast", "_pubmed_fast")
]
setup(ext_modules=cythonize(helpers, quiet=True))
