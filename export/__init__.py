"""Export: merge -> GGUF -> quantise -> verify -> Ollama Modelfile and model card."""
