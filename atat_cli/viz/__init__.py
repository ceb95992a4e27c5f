"""Pictures made by the tool: training curves, ablation plots, denoising animations (gif.py),
importance and training-dynamics heatmaps (heatmaps.py)."""
