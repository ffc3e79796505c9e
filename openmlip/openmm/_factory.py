"""The openmm-ml entry point (``openmmml.potentials``).  Kept tiny on purpose: openmm-ml imports it
while it is itself being imported (it loads entry points at import time), so this module must
need nothing from openmm-ml but its base class, and must not import openmlip's openmm-ml module
at import time (that would be a circular import when the user imports openmlip first)."""
from openmmml.mlpotential import MLPotentialImplFactory


class OpenMLIPPotentialImplFactory(MLPotentialImplFactory):
    """Creates ``OpenMLIPPotentialImpl`` for ``'openmlip'`` and for each shipped plugin name."""

    def createImpl(self, name: str, modelPath=None, **args):
        from .mlpotential import OpenMLIPPotentialImpl

        return OpenMLIPPotentialImpl(name, modelPath)
