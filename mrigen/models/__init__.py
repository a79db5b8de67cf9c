"""Model families by name."""

from mrigen.errors import UserError
from mrigen.models import dcgan, progan, srresnet
from mrigen.models.base import Architecture, Stage

ARCHITECTURES = {
    "dcgan": dcgan.build,
    "srresnet": srresnet.build,
    "progan": progan.build,
}


def build(config, class_names: tuple = ()) -> Architecture:
    """The architecture named by `config.model`, configured from `config`; conditional on `class_names` if any."""
    if config.model not in ARCHITECTURES:
        raise UserError(f"model: unknown model {config.model!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[config.model](config, tuple(class_names))
