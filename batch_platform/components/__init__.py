"""The component types a use-case folder names in its ``defs.yaml``."""

from batch_platform.components.use_case import DeclarationError, UseCaseComponent

# `type: batch_platform.components.UseCase` in a use case's defs.yaml.
UseCase = UseCaseComponent

__all__ = ["DeclarationError", "UseCase", "UseCaseComponent"]
