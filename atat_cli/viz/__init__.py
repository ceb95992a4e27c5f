"""Pictures made by the tool: training curves, ablation plots."""
