"""Local test doubles for cloud services (GCS emulator helpers, fault injection)."""
