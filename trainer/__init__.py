"""trainer: LoRA / QLoRA fine-tuning into versioned, evaluated adapters.

Entry point: `trainer.train.train` (`twin train`), the recipe, read top to bottom.
- `trainer.data`      dataset/*.jsonl -> tokens and reply-only labels, batches
- `trainer.loss`      the reply-token loss, and held-out loss
- `trainer.fit`       the fit loop (transformers Trainer), one process or DDP
- `trainer.pairs`     preference pairs: the owner's real replies and corrections over the
                      twin's own samples
- `trainer.preference` the preference stage after SFT (TRL's DPOTrainer), and the choice
                      between SFT alone and SFT + preference
- `trainer.model`     the base: the embedded SmolLM2, a local folder or a hub id; device,
                      dtype and 4-bit quantization for this machine (`load_base`)
- `trainer.metrics`   what an adapter's metrics.json holds, typed
- `trainer.registry`  data_dir/adapters/: versions, the CURRENT pointer, the promotion gate
- `trainer.report`    an adapter's eval/report.md and charts, from its metrics.json
- `trainer.eval`      `twin eval` (`trainer.eval.evaluate`): fidelity, memory's effect and
                      the canary test
"""
