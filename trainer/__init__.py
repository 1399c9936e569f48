"""trainer: LoRA / QLoRA fine-tuning into versioned, evaluated adapters.

Entry point: `trainer.train.train` (`twin train`), which runs as its own process.
- `trainer.model`     the base model: the embedded SmolLM2, a local folder or a hub id;
                      device, dtype and 4-bit quantization for this machine
- `trainer.registry`  data_dir/adapters/: versions, the CURRENT pointer, the promotion gate
"""
