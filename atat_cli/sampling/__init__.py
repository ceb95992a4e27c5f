"""Generation: samplers for masked diffusion (ancestral with caching, confidence-, uncertainty-
and importance-ordered, adaptive steps), prompts and infilling, AR decoding, quality metrics."""

from atat_cli.sampling.categorical import sample_categorical, top_p_filter
from atat_cli.sampling.generate import Generation, Sample, generate, preview
from atat_cli.sampling.prompts import Layout, build_layout
from atat_cli.sampling.quality import (
                                      generation_report,
                                      generative_perplexity,
                                      load_judge,
                                      score_generation,
                                      unigram_entropy,
)
from atat_cli.sampling.samplers import (
                                      ADAPTIVE,
                                      GRIDS,
                                      METRICS,
                                      REMASK,
                                      SAMPLERS,
                                      SampleOutput,
                                      SamplerSettings,
                                      StepRecord,
                                      sample,
                                      sample_autoregressive,
                                      time_grid,
                                      uncertainty,
)

__all__ = ["ADAPTIVE", "GRIDS", "METRICS", "REMASK", "SAMPLERS", "Generation", "Layout", "Sample", "SampleOutput",
           "SamplerSettings", "StepRecord", "build_layout", "generate", "generation_report", "generative_perplexity",
           "load_judge", "preview", "sample", "sample_autoregressive", "sample_categorical", "score_generation", "time_grid",
           "top_p_filter", "uncertainty", "unigram_entropy"]
