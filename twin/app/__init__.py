"""The roof: the `twin` command and the pipelines that span stages (retrain, demo, status)."""
