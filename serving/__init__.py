"""serving: the twin answering, whatever runs the model. The bot and `twin chat` use it;
training never does (data flows ingest -> trainer -> serving -> bot).

- `serving.twin`          the entry module: the served twin (an engine with the current
                          adapter, the persona prompt) and the prompt a reply is written after,
                          built the way the dataset built training examples
- `serving.engine`        the Engine protocol every engine keeps, and its errors
- `serving.transformers`  the base and its LoRA adapter in this process (the default)
- `serving.llamacpp`      the embedded GGUF base with a GGUF LoRA, on the CPU
- `serving.llama_context` the llama.cpp C API through llama-cpp-python's ctypes bindings
- `serving.openai`        an OpenAI-compatible server (vLLM, SGLang) holding the adapters
- `serving.request_watch` cuts an HTTP request off at its deadline or on stop (openai's)
- `serving.checks`        what every engine checks in an adapter before serving it

Model loading and generation are the trainer's (trainer.model, trainer.generation): training,
its eval and the transformers engine load and sample a model the same way.
"""
