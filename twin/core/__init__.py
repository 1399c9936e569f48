"""The ground floor: imported by ingest, trainer, serving, bot and the app; imports none of them.

The config, bottom up: `tokens` (the tokenizer-free estimate a check needs), `config` (the
schema of config.toml; reads no file), `overrides` (what `/persona set` saves over it, in
data_dir/settings.json), `loading` (`load_config`: config.toml with the overrides applied).
"""
