"""The openmm-ml entry point (``openmmml.potentials``).  Kept tiny on purpose: openmm-ml imports it
while it is itself being imported (it loads entry points at import time), so this module must
need nothing from openmm-ml but its base classes, and must not import openmlip's openmm-ml module
at import time (that would be a circular import when the user imports openmlip first)."""
from openmmml.mlpotential import MLPotential, MLPotentialImplFactory


class OpenMLIPPotentialImplFactory(MLPotentialImplFactory):
    """Creates ``OpenMLIPPotentialImpl`` for ``'openmlip'`` and for each shipped plugin name."""

    def createImpl(self, name: str, modelPath=None, **args):
        from .mlpotential import OpenMLIPPotentialImpl

        return OpenMLIPPotentialImpl(name, modelPath, **args)


class _Factories(dict):
    """openmm-ml's registry of potential names: an unknown ``openmlip*`` name raises
    :class:`~openmlip.errors.ModelFileError` listing the installed openmlip potentials instead of a bare
    ``KeyError`` from ``MLPotential.__init__``; other names behave as before."""

    def __missing__(self, name):
        if isinstance(name, str) and name.startswith("openmlip"):
            from .registry import unknown_potential

            raise unknown_potential(name)
        raise KeyError(name)


if not isinstance(MLPotential._implFactories, _Factories):
    MLPotential._implFactories = _Factories(MLPotential._implFactories)
