"""What CloudFormation says about a deployed stack, for the CLI: the functions' own reading of it
(ivadas_functions.stack), which the Deployments API needs too."""

from ivadas_functions.stack import describe, outputs, parameters

__all__ = ["describe", "outputs", "parameters"]
