"""atat: masked diffusion language models (MDLM) with adaptive time-aware token masking (ATAT).

The core packages (data, models, diffusion, training, evaluation) are a library; `atat_cli.cli`
is a thin Typer layer over them and nothing in the core imports it.
"""

__version__ = "0.1.0"
