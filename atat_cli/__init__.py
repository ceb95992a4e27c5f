"""atat: masked diffusion language models (MDLM) with adaptive time-aware token masking (ATAT).

The core is a library; `atat_cli.cli` is a thin Typer layer over it. Layers, lowest first; a
module imports only from its own layer or the ones below it (tests/test_layers.py checks):

    0  errors, paths, config, device, progress     foundations every layer may use
    1  models, diffusion, data, atat               networks; schedules, masking, SUBS, NELBO terms;
                                                   corpora and tokenizers; ATAT's masking and curriculum
    2  objectives, evaluation                      the training losses; the uniform-NELBO / NLL evaluator
    3  training, sampling, runs                    the trainer; samplers; run folders (load, evaluate)
    4  ablation, viz                               grids and reports; GIFs, heatmaps, plots
    5  cli                                         parse, call one core function, print
"""

__version__ = "0.1.0"
