"""emorec: adapt ChatGLM-family LLMs into emotion recognisers with LoRA or P-Tuning v2."""

__version__ = "0.1.0"
