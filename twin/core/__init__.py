"""The ground floor: imported by ingest, trainer, bot and the app; imports none of them."""
