"""trainer.eval: does the twin sound like the owner, and does it leak their chats?

Entry point: `trainer.eval.evaluate` (`twin eval`, and `measure_fidelity`, which every
training runs for the promotion gate).
- `trainer.eval.fidelity`  the measures: style, real-vs-generated AUC, relevance, copying
- `trainer.eval.memory`    memory's effect: held-out loss with the block and without, and the
                           bundled fact-recall benchmark
- `trainer.eval.canary`    planted fake secrets, a throwaway adapter: does the twin tell them?
What an evaluation wrote is shown by `trainer.report` (eval/report.md in the adapter folder).
"""
