"""trainer: LoRA / QLoRA fine-tuning into versioned, evaluated adapters (issue #3)."""
