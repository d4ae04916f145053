"""Models: GLM-4 and ChatGLM2/3 (converted to the native GlmForCausalLM), the tiny test GLM, adapters (LoRA and
P-Tuning v2 through peft), prefix attention and the packed causal LM."""
